"""The agent loop: ask the model, run its tool calls, feed back the results, until it answers or runs out
of steps; the trajectory compressor bounds the context, the summarizer (inside `open`) shortens pages.

    agent = Agent(client, AgentConfig(max_steps=200, compress_every=50))
    record = agent.run("Find ...", make_toolbox)      # make_toolbox(summarize) -> ToolBox; summarize(page, query)
    record["answer"], record["peak_prompt_tokens"], record["events"]
    assert replay(record, make_toolbox)               # same model replies -> same tool results, same answer

One step = one assistant turn with its tool calls (several calls in a turn are run in order, each with its
own timeout) and their results. What never crashes the run: a call to an unknown tool, arguments that
are not JSON or break the schema, a `<tool_call>` block the parser could not read (left in the content
by `parse_response`), a tool that raises or hangs: each becomes an error result the model sees. A failure
to reach the model ends the run with finish "error" and the message, the log intact.

The log (`record["events"]`) holds every model reply (agent, summarizer, compressor, in call order),
every token count the sub-agents asked for, every tool call with its result (and the raw page when
the model saw a summary) and every compression. Replaying feeds the logged replies back through the
same loop over a fresh environment and requires the identical event list.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

from .client import ChatClient, ClientError, Reply, ReplayClient
from .compressor import Compressor
from .summarizer import Summarizer
from .tools import ToolBox

SYSTEM = ("You are a helpful assistant that solves the user's task with the declared tools. Call tools with "
          "<tool_call> JSON; when the task is done, reply with the final answer and no tool call.")
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


@dataclass
class AgentConfig:
    max_steps: int = 50
    compress_every: int = 0  # tool steps between compressions (0: never); BrowseComp setting 50
    keep_last: int = 4  # steps the compressor's fallback keeps
    retries: int = 1  # compressor re-asks after an invalid record
    summarize_over: int = 0  # pages over this many tokens go through the summarizer (0: never)
    temperature: float = 0.0
    max_tokens: int = 512
    sub_max_tokens: int = 1024  # length of a compressor record / summary
    tool_choice: str = "auto"  # "required": every turn must call a tool (OpenAI / vLLM semantics)
    system: str = SYSTEM


class _Recorder:
    """A client view that appends every reply and token count to the shared event log."""

    def __init__(self, client: ChatClient, events: list, role: str):
        self.client, self.events, self.role = client, events, role

    def chat(self, messages, tools=None, **sampling) -> Reply:
        reply = self.client.chat(messages, tools, **sampling)
        self.events.append({"type": "model", "role": self.role, "reply": asdict(reply)})
        return reply

    def count_tokens(self, text: str) -> int:
        n = self.client.count_tokens(text)
        self.events.append({"type": "count", "role": self.role, "tokens": n})
        return n


def malformed_calls(content: str) -> list[str]:
    """Why each `<tool_call>` block left in the content (one the parser could not read) is unusable."""
    out = []
    for body in _BLOCK.findall(content or ""):
        try:
            obj = json.loads(body)
            why = "it needs a \"name\" and an \"arguments\" object" if not (
                isinstance(obj, dict) and "name" in obj) else "its name or arguments are not usable"
        except json.JSONDecodeError as e:
            why = f"not valid JSON ({e.msg} at character {e.pos})"
        out.append(f"error: could not parse the tool call {body[:80]!r}: {why}. Write "
                   '<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>')
    return out


@dataclass
class Agent:
    client: ChatClient
    config: AgentConfig = field(default_factory=AgentConfig)

    def run(self, instruction: str, make_toolbox: Callable[[Summarizer], ToolBox]) -> dict:
        cfg, events = self.config, []
        agent = _Recorder(self.client, events, "agent")
        compressor = Compressor(_Recorder(self.client, events, "compressor"), cfg.keep_last, cfg.retries,
                                cfg.sub_max_tokens)
        summarizer = Summarizer(_Recorder(self.client, events, "summarizer"), cfg.summarize_over, cfg.sub_max_tokens)
        toolbox = make_toolbox(summarizer)
        schemas = toolbox.schemas()
        messages = [{"role": "system", "content": cfg.system}, {"role": "user", "content": instruction}]
        n_head = len(messages)
        prompt_tokens: list[int] = []
        answer, finish, steps, error = "", "max_steps", 0, None
        while steps < cfg.max_steps:
            try:
                reply = agent.chat(messages, schemas, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                   **({"tool_choice": cfg.tool_choice} if cfg.tool_choice != "auto" else {}))
            except ClientError as e:
                finish, error = "error", str(e)
                events.append({"type": "error", "message": error})
                break
            prompt_tokens.append(reply.prompt_tokens)
            msg = reply.message
            messages.append(msg)
            bad = malformed_calls(msg.get("content", ""))
            if not msg.get("tool_calls") and not bad:
                answer, finish = msg.get("content", "").strip(), "answer"
                break
            steps += 1
            for i, call in enumerate(msg.get("tool_calls") or []):
                fn = call["function"]
                result = toolbox.call(fn["name"], fn["arguments"])
                events.append({"type": "tool", "step": steps, "id": call.get("id"), "name": fn["name"],
                               "arguments": fn["arguments"], "content": result.content, "error": result.error,
                               **({"raw": result.raw} if result.raw is not None else {})})
                messages.append({"role": "tool", "tool_call_id": call.get("id") or f"call-{i}",
                                 "content": result.content})
            for j, why in enumerate(bad):
                events.append({"type": "tool", "step": steps, "id": None, "name": None, "arguments": None,
                               "content": why, "error": True})
                messages.append({"role": "tool", "tool_call_id": f"malformed-{j}", "content": why})
            if cfg.compress_every and steps % cfg.compress_every == 0 and steps < cfg.max_steps:
                messages, entry = compressor.compress(messages, n_head)
                events.append({"type": "compress", "step": steps, **entry})
        return {"instruction": instruction, "config": asdict(cfg), "answer": answer, "finish": finish, "error": error,
                "steps": steps, "peak_prompt_tokens": max(prompt_tokens, default=0), "prompt_tokens": prompt_tokens,
                "peak_subagent_prompt_tokens": max((e["reply"]["prompt_tokens"] for e in events
                                                    if e["type"] == "model" and e["role"] != "agent"), default=0),
                "compressions": compressor.compressions, "compression_fallbacks": compressor.fallbacks,
                "summaries": summarizer.calls, "events": events, "messages": messages}


def replay(record: dict, make_toolbox: Callable[[Summarizer], ToolBox]) -> bool:
    """Re-run a logged trajectory with the logged model replies over a fresh toolbox; True when every
    event (tool results included) and the answer come out identical."""
    replies = [Reply(**e["reply"]) for e in record["events"] if e["type"] == "model"]
    counts = iter([e["tokens"] for e in record["events"] if e["type"] == "count"])
    errors = [e["message"] for e in record["events"] if e["type"] == "error"]

    class _Logged(ReplayClient):
        def chat(self, messages, tools=None, **sampling):
            if self.at == len(self.replies) and errors:
                raise ClientError(errors[0])
            return super().chat(messages, tools, **sampling)

        def count_tokens(self, text):
            return next(counts)

    cfg = AgentConfig(**record["config"])
    again = Agent(_Logged(replies), cfg).run(record["instruction"], make_toolbox)
    return again["events"] == record["events"] and again["answer"] == record["answer"]
