"""kexa.agent runtime: tool schemas from typed functions, tool errors as results, K-EXAONE tool-call parsing
(malformed JSON included), the compressor's validation / retry / fallback, the context bound, the
summarizer and replay. Models are scripted policies behind the client protocol (no weights needed)."""

import json
import time
from typing import Literal

import pytest

from kexa.agent import Agent, AgentConfig, Compressor, ToolBox, function_schema, replay
from kexa.agent.builtin import Collection, builtin_toolbox, search_tools
from kexa.agent.client import ReplayClient, ScriptedClient
from kexa.agent.compressor import RECORD_PREFIX, parse_record, steps_of
from kexa.agent.loop import malformed_calls
from kexa.serve.reply import THINKING_HEAD, split_reply


def lookup(city: str, days: int = 3, units: Literal["c", "f"] = "c", tags: list[str] | None = None) -> dict:
    """Weather forecast for a city.

    Args:
        city: the city's name
        days: how many days ahead
            (note: at most a week)
        units: c or f
    """
    return {"city": city, "days": days}


def test_schema_from_signature_and_docstring():
    s = function_schema(lookup)
    assert s == {"type": "function", "function": {
        "name": "lookup", "description": "Weather forecast for a city.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["city"], "properties": {
            "city": {"type": "string", "description": "the city's name"},
            "days": {"type": "integer", "description": "how many days ahead (note: at most a week)", "default": 3},
            "units": {"type": "string", "enum": ["c", "f"], "description": "c or f", "default": "c"},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}}}}}

    def untyped(x):
        """Doc."""
    with pytest.raises(TypeError, match="no type annotation"):
        function_schema(untyped)

    def undocumented(x: int):
        pass
    with pytest.raises(TypeError, match="docstring"):
        function_schema(undocumented)


def test_tool_failures_come_back_as_error_results():
    def slow(seconds: float) -> str:
        """Sleep."""
        time.sleep(seconds)
        return "done"

    def boom(x: int) -> int:
        """Fail."""
        raise RuntimeError("disk on fire")

    box = ToolBox(timeout_s=5).add(lookup).add(boom).add(slow, timeout_s=0.2)
    assert json.loads(box.call("lookup", '{"city": "Seoul"}').content) == {"city": "Seoul", "days": 3}
    cases = [("nope", "{}", "unknown tool 'nope'"),
             ("lookup", '{"city": "Seoul"', "not valid JSON"),
             ("lookup", {"city": 5}, "city: 5 is not of type 'string'"),
             ("lookup", {"city": "x", "extra": 1}, "Additional properties"),
             ("lookup", {"city": "x", "units": "k"}, "units: 'k' is not one of"),
             ("boom", {"x": 1}, "RuntimeError: disk on fire"),
             ("slow", {"seconds": 3}, "did not finish within 0.2 s")]
    for name, args, why in cases:
        r = box.call(name, args)
        assert r.error and why in r.content, (name, args, r.content)
    assert box.call("slow", {"seconds": 0}).content == "done"


def _echo_box(summarize=None):
    return ToolBox().add(lookup)


def test_kexa_tool_calls_parsed_and_malformed_ones_returned_as_errors():
    # what a K-EXAONE model writes after the generation prompt: one good call, one with broken JSON
    text = ('Let me check.\n</think>\n\n<tool_call>{"name": "lookup", "arguments": {"city": "Seoul"}}</tool_call>\n'
            '<tool_call>{"name": "lookup", "arguments": {"city": "Busan"</tool_call><|endofturn|>')
    msg = split_reply(THINKING_HEAD + text)
    assert [c["function"]["name"] for c in msg["tool_calls"]] == ["lookup"]
    assert len(malformed_calls(msg["content"])) == 1 and "not valid JSON" in malformed_calls(msg["content"])[0]
    assert malformed_calls('<tool_call>{"name": "lookup", "arguments": {"x": 1') != []  # unclosed block

    replies = iter([msg, {"content": "Seoul is fine."}])
    seen = []

    def policy(messages, tools):
        seen.append(messages)
        return next(replies)

    record = Agent(ScriptedClient(policy), AgentConfig(max_steps=5)).run("weather?", _echo_box)
    assert record["finish"] == "answer" and record["answer"] == "Seoul is fine." and record["steps"] == 1
    results = [m for m in seen[1] if m["role"] == "tool"]
    assert json.loads(results[0]["content"])["city"] == "Seoul"
    assert results[1]["content"].startswith("error: could not parse the tool call")
    tools = [e for e in record["events"] if e["type"] == "tool"]
    assert [e["error"] for e in tools] == [False, True]


def test_max_steps_and_unreachable_model_end_the_run_without_crash():
    loop_forever = ScriptedClient(lambda m, t: {"tool_calls": [
        {"function": {"name": "lookup", "arguments": {"city": "x"}}}]})
    r = Agent(loop_forever, AgentConfig(max_steps=3)).run("go", _echo_box)
    assert r["finish"] == "max_steps" and r["steps"] == 3 and r["answer"] == ""

    class Down:
        def chat(self, *a, **k):
            from kexa.agent import ClientError
            raise ClientError("http://nowhere answered 400: prompt too long")

        def count_tokens(self, text):
            return 1
    r = Agent(Down(), AgentConfig()).run("go", _echo_box)
    assert r["finish"] == "error" and "prompt too long" in r["error"]


RECORD = {"facts": ["vault 3 code is 4411"], "open_questions": ["vault 9?"], "progress": "checked 1-8"}


def _history(n_steps):
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "task"}]
    for i in range(n_steps):
        msgs += [{"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "search", "arguments": f'{{"query": "q{i}"}}'}}]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"result {i}"}]
    return msgs


def test_record_schema_validation():
    assert parse_record("```json\n" + json.dumps(RECORD) + "\n```") == RECORD
    for bad, why in [("no json here", "no JSON object"), ('{"facts": [}', "not valid JSON"),
                     (json.dumps({**RECORD, "facts": "one"}), "facts: 'one' is not of type 'array'"),
                     (json.dumps({**RECORD, "mood": "ok"}), "Additional properties"),
                     (json.dumps({"facts": []}), "'open_questions' is a required property")]:
        with pytest.raises(ValueError, match=why):
            parse_record(bad)


def test_compressor_retries_then_falls_back_to_last_steps():
    answers = iter(["not json", json.dumps(RECORD)])
    comp = Compressor(ScriptedClient(lambda m, t: {"content": next(answers)}), keep_last=2, retries=1)
    msgs, entry = comp.compress(_history(6), n_head=2)
    assert entry == {"kind": "record", "record": RECORD, "attempts": 2}
    assert (comp.compressions, comp.invalid, comp.fallbacks) == (1, 1, 0)
    assert len(msgs) == 3 and msgs[2]["content"] == RECORD_PREFIX + json.dumps(RECORD)

    comp = Compressor(ScriptedClient(lambda m, t: {"content": '{"facts": 1}'}), keep_last=2, retries=2)
    msgs2, entry = comp.compress(msgs + _history(5)[2:], n_head=2)
    assert entry["kind"] == "fallback" and len(entry["errors"]) == 3
    assert (comp.compressions, comp.invalid, comp.fallbacks) == (0, 3, 1)
    # task statement + the previous record + the last two steps (call and result each)
    assert msgs2[:3] == msgs and [m["role"] for m in msgs2[3:]] == ["assistant", "tool"] * 2
    assert msgs2[-1]["content"] == "result 4" and len(steps_of(msgs2[2:])) == 3


PAGES = [{"id": f"p{i}", "title": f"Report {i}", "text": f"Report {i} says the reading of sensor {i} is {i * 7 % 100}. "
          + "Background filler about the site and its history. " * 6} for i in range(160)]


def _scan_policy(messages, tools):
    """Searches report after report; compresses by keeping the readings it has seen."""
    if messages[0]["content"].startswith("You are the trajectory compressor"):
        facts = sorted(set(__import__("re").findall(r"sensor \d+ is \d+", messages[-1]["content"])))
        return {"content": json.dumps({"facts": facts, "open_questions": [], "progress": f"{len(facts)} readings"})}
    done = sum(1 for m in messages if m["role"] == "assistant")
    return {"tool_calls": [{"function": {"name": "search", "arguments": {"query": f"report {done + 1}"}}}]}


def test_context_stays_bounded_with_compression():
    coll = Collection(PAGES)
    make = lambda summarize: builtin_toolbox(coll, summarize)  # noqa: E731
    peaks = {}
    for every in (0, 10):
        for steps in (30, 120):
            r = Agent(ScriptedClient(_scan_policy), AgentConfig(max_steps=steps, compress_every=every)).run(
                "Collect sensor readings.", make)
            assert r["finish"] == "max_steps" and r["steps"] == steps
            assert r["compressions"] == ((steps - 1) // every if every else 0) and r["compression_fallbacks"] == 0
            peaks[every, steps] = r["peak_prompt_tokens"]
    assert peaks[0, 120] > 3 * peaks[0, 30]  # uncompressed grows with the run
    # compressed: bounded by the task + one record + `every` steps; the record grows by one short fact per step
    assert peaks[10, 120] < 0.35 * peaks[0, 120]
    assert peaks[10, 120] - peaks[10, 30] < 0.5 * (peaks[0, 120] - peaks[0, 30]) / 4


def test_summarizer_shows_summary_and_logs_raw_page():
    long_page = {"id": "long", "title": "Long", "text": "The founder was Ada Park in 1931. " + "Filler. " * 400}
    coll = Collection([long_page, {"id": "short", "text": "short page"}])
    replies = iter([{"tool_calls": [{"function": {"name": "open", "arguments": {"doc_id": "long", "query": "founder"}}},
                                    {"function": {"name": "open", "arguments": {"doc_id": "short"}}}]},
                    {"content": "Founded by Ada Park, 1931."}, {"content": "Ada Park"}])

    def policy(messages, tools):
        if messages[0]["content"].startswith("You are the summarizer"):
            assert "Query: founder" in messages[1]["content"]
        return next(replies)

    r = Agent(ScriptedClient(policy), AgentConfig(summarize_over=100)).run(
        "Who founded it?", lambda summarize: ToolBox().add(search_tools(coll, summarize)[1]))
    opens = [e for e in r["events"] if e["type"] == "tool"]
    assert opens[0]["content"].endswith("Founded by Ada Park, 1931.") and opens[0]["raw"].startswith("Long\nThe founder")
    assert opens[1]["content"] == "short page" and "raw" not in opens[1]
    assert r["summaries"] == 1 and r["answer"] == "Ada Park"
    assert [e["role"] for e in r["events"] if e["type"] == "model"] == ["agent", "summarizer", "agent"]


def test_replay_reproduces_the_log_and_detects_tampering():
    coll = Collection(PAGES[:40])
    make = lambda summarize: builtin_toolbox(coll, summarize)  # noqa: E731
    r = Agent(ScriptedClient(_scan_policy), AgentConfig(max_steps=12, compress_every=5)).run("Scan.", make)
    r = json.loads(json.dumps(r))  # as read back from trajectories.jsonl
    assert replay(r, make)
    tampered = json.loads(json.dumps(r))
    next(e for e in tampered["events"] if e["type"] == "tool")["content"] = "something else"
    assert not replay(tampered, make)
    with pytest.raises(Exception, match="replay asked for more"):
        ReplayClient([]).chat([])
