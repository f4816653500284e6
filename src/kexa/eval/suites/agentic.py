"""Agentic tool use: the synthetic SQLite environments (`kexa.agent.envs`, held-out split) run through the
agent loop (`kexa.agent.loop.Agent`) against the harness's target.

    kexa eval run --model runs/nano/model --suite agentic --mode both --limit 10
    kexa eval run --endpoint http://localhost:8000/v1 --suite agentic --option agentic.tasks=envs/tasks.jsonl

One item = one task = one episode: the model is asked, its tool calls run against the task's own in-memory
world, the results go back, until it answers or `max_steps` tool steps are spent. The loop is kexa.agent's
(the same one `kexa agent run` and RL use); this suite only adapts the harness's `ModelClient` to the
loop's `ChatClient` and scores the episode. Metrics:
- `pass_rate`: the task's own pass criterion (`Environment.check`: the expected final world and the
  expected numbers in the answer), the K-EXAONE report's agentic score;
- `steps_mean`: tool steps per episode;
- `tool_call_validity`: share of the tool calls whose name is declared and whose arguments are a JSON
  object that validates against the declared schema (a `<tool_call>` block the parser could not read
  counts as an invalid call); null when no call was made;
- `answered`: share of episodes that ended with an answer (not out of steps).
A failure to reach the model ends the episode as the item's error (asked again on resume), as for every
suite. Tasks: `tasks=FILE` (a `kexa agent envs` tasks.jsonl), else generated here from `seed` (programmatic,
screened by the reference solver); only the `split` ones (default held-out: kexa.tasks' stable hash split, so
tool-use SFT on the train split never saw them).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import jsonschema

from ...agent.client import ClientError, Reply as AgentReply, wire_messages
from ...agent.envs import Environment, generate, load_tasks
from ...agent.loop import Agent, AgentConfig
from ...client import GenParams, ModelClient, Reply
from .base import Suite


class ModelChat:
    """The harness's `ModelClient` behind the agent loop's `ChatClient` protocol, with the harness's sampling
    settings (temperature, top-p, seed); a failed call raises ClientError, which ends the episode as an error."""

    def __init__(self, client: ModelClient, params: GenParams, thinking: bool):
        self.client, self.params, self.thinking = client, params, thinking

    def chat(self, messages, tools=None, max_tokens: int | None = None, **_) -> AgentReply:
        params = replace(self.params, max_tokens=max_tokens or self.params.max_tokens)
        r = self.client.chat([wire_messages(messages)], params, thinking=self.thinking, tools=tools)[0]
        if r.error is not None:
            raise ClientError(r.error)
        calls = [{"id": c.get("id") or f"call-{i}", "type": "function",
                  "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
                 for i, c in enumerate(r.tool_calls or [])]
        message = {"role": "assistant", "content": r.content, "reasoning_content": r.reasoning, "tool_calls": calls}
        return AgentReply(message, finish_reason=r.finish_reason or "stop")

    def count_tokens(self, text: str) -> int:
        tok = getattr(self.client, "tok", None)
        return len(tok.encode(text)) if tok is not None else max(1, len(text) // 4)


def call_is_valid(name, arguments, tools: list[dict]) -> bool:
    """A declared tool, called with a JSON object that validates against its declared parameters."""
    schema = next((t["function"]["parameters"] for t in tools if t["function"]["name"] == name), None)
    if schema is None:
        return False
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return False
    return isinstance(arguments, dict) and jsonschema.Draft202012Validator(schema).is_valid(arguments)


class Agentic(Suite):
    name = "agentic"
    kind = "episode"  # the suite drives the model itself (run_episode), over several turns
    max_tokens = 512  # per turn

    def __init__(self, tasks: str | None = None, seed: int | str = 1234, split: str = "heldout",
                 max_steps: int | str = 8, n: int | str = 50):
        try:  # `--option agentic.max_steps=4` arrives as a string
            seed, max_steps, n = int(seed), int(max_steps), int(n)
        except ValueError as e:
            raise ValueError(f"agentic: seed, max_steps and n must be integers ({e})") from e
        if max_steps < 1 or n < 1:
            raise ValueError("agentic: max_steps and n must be >= 1")
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"agentic: split must be train, heldout or all; got {split!r}")
        self.tasks_file, self.seed, self.split, self.max_steps, self.n = tasks, seed, split, max_steps, n

    def settings(self) -> dict:
        return {"tasks": self.tasks_file or f"generated (seed {self.seed})", "split": self.split,
                "max_steps": self.max_steps}

    def _tasks(self, want: int) -> list[dict]:
        keep = lambda ts: [t for t in ts if self.split in ("all", t.get("split"))]  # noqa: E731
        if self.tasks_file:
            tasks = keep(load_tasks(self.tasks_file))
            if not tasks:
                raise ValueError(f"agentic: {self.tasks_file} holds no task of split {self.split!r}")
            return tasks
        drawn = max(20, 5 * want)  # ~20% of generated tasks are held out; draw more until enough
        while True:
            tasks = keep(generate(drawn, self.seed)[0])  # deterministic: the same ids on every resume
            if len(tasks) >= want or drawn > 50 * want:
                return tasks
            drawn *= 2

    def items(self, limit: int | None) -> list[dict]:
        want = min(self.n, limit) if limit is not None else self.n
        return [{"id": t["id"], "domain": t["domain"], "lang": t["lang"], "task": t} for t in self._tasks(want)[:want]]

    def run_episode(self, client: ModelClient, item: dict, params: GenParams, thinking: bool) -> Reply:
        """One task through the agent loop; the episode (answer, pass, every tool call) as the Reply's JSON text."""
        task, t0 = item["task"], time.perf_counter()
        env = Environment(task)
        config = AgentConfig(max_steps=self.max_steps, temperature=params.temperature, max_tokens=params.max_tokens)
        record = Agent(ModelChat(client, params, thinking), config).run(task["instruction"], lambda _: env.toolbox())
        seconds = time.perf_counter() - t0
        if record["finish"] == "error":
            return Reply(error=record["error"], seconds=seconds)
        calls = [{"name": e["name"], "arguments": e["arguments"], "result": e["content"][:300],
                  "valid": call_is_valid(e["name"], e["arguments"], task["tools"])}
                 for e in record["events"] if e["type"] == "tool"]
        episode = {"passed": env.check(record["answer"]), "finish": record["finish"], "steps": record["steps"],
                   "answer": record["answer"], "calls": calls}
        return Reply(text=json.dumps(episode, ensure_ascii=False), content=record["answer"], finish_reason="stop",
                     seconds=seconds)

    def score(self, items, replies) -> list[dict]:
        out = []
        for r in replies:
            ep = json.loads(r.text)
            out.append({"passed": bool(ep["passed"]), "steps": ep["steps"], "answered": ep["finish"] == "answer",
                        "calls": len(ep["calls"]), "valid_calls": sum(c["valid"] for c in ep["calls"])})
        return out

    def summarize(self, records, out_dir, mode) -> dict:
        s = [r["scores"] for r in records]
        calls = sum(x["calls"] for x in s)
        return {"pass_rate": sum(x["passed"] for x in s) / len(s), "steps_mean": sum(x["steps"] for x in s) / len(s),
                "tool_call_validity": sum(x["valid_calls"] for x in s) / calls if calls else None,
                "tool_calls": calls, "answered": sum(x["answered"] for x in s) / len(s)}
