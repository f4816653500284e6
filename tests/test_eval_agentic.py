"""The agentic suite: tool-use episodes through kexa.agent's loop, scored by each task's own pass check.
A client replaying the reference solver passes every task with valid calls; a client that breaks the schema
and answers wrongly fails with validity < 1; a failing client is a per-item error asked again on resume;
a tiny in-process model runs, is scored and resumes."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.agent.envs import solve
from kexa.client import EngineClient, ModelClient, Reply
from kexa.eval.cli import main as eval_main
from kexa.eval.harness import read_records, run_eval
from kexa.eval.suites import build_suite
from kexa.eval.suites.agentic import call_is_valid
from kexa.tokenizer import train_bpe

QUIET = {"progress": lambda m: None}


class SolverClient(ModelClient):
    """Replays the reference solver's assistant turns for each task (found by its instruction)."""

    name = "solver"

    def __init__(self, tasks):
        self.turns = {t["instruction"]: [m for m in solve(t)[2] if m["role"] == "assistant"] for t in tasks}
        self.calls = 0

    def chat(self, conversations, params, thinking=True, tools=None):
        out = []
        for messages in conversations:
            self.calls += 1
            assert tools, "the task's tools are declared to the model"
            instruction = next(m["content"] for m in messages if m["role"] == "user")
            turn = self.turns[instruction][sum(m["role"] == "assistant" for m in messages)]
            calls = [{"id": c["id"], "type": "function", "function": {"name": c["function"]["name"],
                      "arguments": json.dumps(c["function"]["arguments"])}} for c in turn.get("tool_calls", [])]
            out.append(Reply(text=turn["content"], content=turn["content"], tool_calls=calls or None,
                             finish_reason="stop"))
        return out


class CarelessClient(ModelClient):
    """First turn: a declared tool with an undeclared argument, then an unknown tool; then a wrong answer."""

    name = "careless"

    def chat(self, conversations, params, thinking=True, tools=None):
        messages = conversations[0]
        if not any(m["role"] == "tool" for m in messages):
            first = tools[0]["function"]["name"]
            calls = [{"id": "a", "type": "function", "function": {"name": first, "arguments": '{"nope": 1}'}},
                     {"id": "b", "type": "function", "function": {"name": "no_such_tool", "arguments": "{}"}}]
            return [Reply(text="", content="", tool_calls=calls, finish_reason="stop")]
        return [Reply(text="done", content="I could not do it.", finish_reason="stop")]


class DownClient(ModelClient):
    name = "down"

    def chat(self, conversations, params, thinking=True, tools=None):
        return [Reply(error="connection error (3 attempts): refused") for _ in conversations]


def test_items_are_held_out_and_deterministic():
    a, b = build_suite("agentic").items(4), build_suite("agentic").items(4)
    assert [x["id"] for x in a] == [x["id"] for x in b] and len(a) == 4
    assert all(x["task"]["split"] == "heldout" for x in a)
    assert len({x["domain"] for x in build_suite("agentic").items(12)}) > 1


def test_solver_replay_scores_one_and_resume_asks_nothing(tmp_path):
    tasks = [it["task"] for it in build_suite("agentic").items(4)]
    client = SolverClient(tasks)
    result = run_eval(client, ["agentic"], ["reasoning", "plain"], tmp_path, limit=4, chunk=2, **QUIET)
    m = result["suites"]["agentic"]
    assert m["pass_rate"] == 1.0 and m["plain/pass_rate"] == 1.0 and m["n"] == 4 and m["errors"] == 0
    assert m["tool_call_validity"] == 1.0 and m["answered"] == 1.0
    expected_steps = sum(sum(1 for x in solve(t)[2] if x.get("tool_calls")) for t in tasks) / 4
    assert m["steps_mean"] == expected_steps > 0
    rec = next(iter(read_records(tmp_path / "items" / "agentic.reasoning.jsonl").values()))
    episode = json.loads(rec["reply"]["text"])
    assert episode["passed"] and episode["calls"] and all(c["valid"] for c in episode["calls"])
    asked = client.calls
    again = run_eval(client, ["agentic"], ["reasoning", "plain"], tmp_path, limit=4, **QUIET)
    assert client.calls == asked and again["suites"]["agentic"] == m  # resumed: nothing asked again


def test_schema_breaking_calls_and_wrong_answer_score_zero(tmp_path):
    result = run_eval(CarelessClient(), ["agentic"], ["plain"], tmp_path, limit=3, **QUIET)
    m = result["suites"]["agentic"]
    assert m["pass_rate"] == 0.0 and m["tool_call_validity"] == 0.0 and m["tool_calls"] == 6
    assert m["steps_mean"] == 1.0 and m["answered"] == 1.0


def test_call_validity_against_the_declared_schema():
    tools = build_suite("agentic").items(1)[0]["task"]["tools"]
    fn = tools[0]["function"]
    required = {k: ("x" if v.get("type") == "string" else 1) for k, v in fn["parameters"]["properties"].items()
                if k in fn["parameters"]["required"]}
    assert call_is_valid(fn["name"], json.dumps(required), tools) == all(
        fn["parameters"]["properties"][k].get("type") in ("string", "integer", "number") for k in required)
    assert not call_is_valid(fn["name"], "{not json", tools)
    assert not call_is_valid(fn["name"], "[1, 2]", tools)
    assert not call_is_valid("no_such_tool", "{}", tools)
    assert not call_is_valid(None, None, tools)  # a <tool_call> block the parser could not read


def test_unreachable_model_is_a_per_item_error_asked_again(tmp_path):
    result = run_eval(DownClient(), ["agentic"], ["reasoning"], tmp_path, limit=2, **QUIET)
    m = result["suites"]["agentic"]
    assert m["errors"] == 2 and m["n"] == 0
    rec = next(iter(read_records(tmp_path / "items" / "agentic.reasoning.jsonl").values()))
    assert "refused" in rec["error"]
    tasks = [it["task"] for it in build_suite("agentic").items(2)]
    result = run_eval(SolverClient(tasks), ["agentic"], ["reasoning"], tmp_path, limit=2, **QUIET)
    assert result["suites"]["agentic"]["pass_rate"] == 1.0 and result["suites"]["agentic"]["errors"] == 0


def test_bad_options_are_one_line():
    with pytest.raises(ValueError, match="max_steps"):
        build_suite("agentic", max_steps=0)
    with pytest.raises(ValueError, match="no such task file"):
        build_suite("agentic", tasks="/nonexistent/tasks.jsonl").items(2)


def test_tiny_model_runs_scores_and_resumes(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text('<tool_call>{"name": "get_order", "arguments": {"order_id": "A-1"}}</tool_call> done 42\n' * 40)
    tok = train_bpe([str(corpus)], vocab_size=400)
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size, max_position_embeddings=8192))
    client = EngineClient(model.eval(), tok, name="tiny")
    opts = {"agentic": {"max_steps": 2}}
    result = run_eval(client, ["agentic"], ["plain"], tmp_path, limit=2, max_tokens=8, suite_options=opts, **QUIET)
    m = result["suites"]["agentic"]
    assert m["n"] + m["errors"] == 2 and m["n"] == 2, read_records(tmp_path / "items" / "agentic.plain.jsonl")
    assert 0.0 <= m["pass_rate"] <= 1.0 and 0 <= m["steps_mean"] <= 2
    assert result["settings"]["suite_settings"]["agentic"]["max_steps"] == 2
    path = tmp_path / "items" / "agentic.plain.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n")  # lose the second item: the rerun answers only that one
    again = run_eval(client, ["agentic"], ["plain"], tmp_path, limit=2, max_tokens=8, suite_options=opts, **QUIET)
    assert again["suites"]["agentic"]["n"] == 2 and len(path.read_text().splitlines()) == 2


def test_report_grid_over_stages_counts_errors(tmp_path):
    """The speedrun report's Table-3 grid (kexa.report.evaluation_section over stages_table): a stage whose
    model could not be asked shows '-' and its error count; a solving stage shows 1.0 in both modes."""
    from kexa.report import evaluation_section
    tasks = [it["task"] for it in build_suite("agentic").items(2)]
    modes = ["reasoning", "plain"]
    down = run_eval(DownClient(), ["agentic"], modes, tmp_path / "a", limit=2, **QUIET)
    solved = run_eval(SolverClient(tasks), ["agentic"], modes, tmp_path / "b", limit=2, **QUIET)
    section = evaluation_section({**solved, "stages": {"pretrain": down, "sft": solved}})
    assert "| suite | metric | pretrain reasoning | pretrain plain | sft reasoning | sft plain |" in section
    assert "| agentic | pass_rate | - | - | 1.0000 | 1.0000 |" in section
    assert "| agentic | tool_call_validity | - | - | 1.0000 | 1.0000 |" in section
    assert "pretrain reasoning agentic: 2; pretrain plain agentic: 2." in section
    assert "temperature 1.0, top-p 0.95, MTP off, 2 item(s)" in section


class SolverAPI(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions that replays the reference solver (tool calls in OpenAI's
    wire shape, arguments as JSON strings): the agentic suite through `--endpoint` and the openai client."""

    turns: dict = {}
    seen_tools: list = []

    def log_message(self, *args):
        pass

    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "solver", "object": "model", "created": 0, "owned_by": "x"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        messages = body["messages"]
        SolverAPI.seen_tools.append(len(body.get("tools", [])))
        instruction = next(m["content"] for m in messages if m["role"] == "user")
        turn = SolverAPI.turns[instruction][sum(m["role"] == "assistant" for m in messages)]
        calls = [{"id": c["id"], "type": "function", "function": {"name": c["function"]["name"],
                  "arguments": json.dumps(c["function"]["arguments"])}} for c in turn.get("tool_calls", [])]
        msg = {"role": "assistant", "content": turn["content"] or None, **({"tool_calls": calls} if calls else {})}
        self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "solver",
                    "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if calls else "stop"}]})


def test_endpoint_cli_run_through_the_openai_client(tmp_path, capsys):
    tasks = [it["task"] for it in build_suite("agentic").items(2)]
    SolverAPI.turns = {t["instruction"]: [m for m in solve(t)[2] if m["role"] == "assistant"] for t in tasks}
    SolverAPI.seen_tools = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SolverAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = eval_main(["run", "--endpoint", f"http://127.0.0.1:{server.server_address[1]}/v1", "--suite",
                          "agentic", "--limit", "2", "--option", "agentic.max_steps=6", "--out", str(tmp_path),
                          "--json"])
    finally:
        server.shutdown()
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    m = result["suites"]["agentic"]
    assert (m["pass_rate"], m["tool_call_validity"], m["n"], m["errors"]) == (1.0, 1.0, 2, 0)
    assert result["settings"]["suite_settings"]["agentic"]["max_steps"] == 6
    assert SolverAPI.seen_tools and all(n > 0 for n in SolverAPI.seen_tools)  # the tools were declared


def test_bad_cli_option_is_one_line(tmp_path, capsys):
    code = eval_main(["run", "--endpoint", "http://127.0.0.1:9/v1", "--suite", "agentic",
                      "--option", "agentic.max_steps=many", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "max_steps" in err
