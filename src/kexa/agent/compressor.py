"""The trajectory-compressor sub-agent (K-EXAONE report §3.3; BrowseComp setting: compress every 50 of up
to 500 steps): every N tool steps the history since the task statement is replaced by one JSON record
written by the same model,

    {"facts": [str, ...], "open_questions": [str, ...], "progress": str}

validated against RECORD_SCHEMA (`jsonschema`). A reply that is not such a record is sent back with the
validation error (up to `retries` times); if it still fails, the history is cut to its last `keep_last`
steps instead (counted in `fallbacks`). Either way the context after a compression is bounded: the task
statement, the previous record's successor (or K steps), and at most N new steps until the next one.

    comp = Compressor(client, keep_last=4, retries=1)
    messages = comp.compress(messages, n_head=2)       # n_head: the task-statement messages kept as they are
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import jsonschema

from .client import ChatClient, ClientError

RECORD_SCHEMA = {
    "type": "object",
    "properties": {
        "facts": {"type": "array", "items": {"type": "string"}},
        "open_questions": {"type": "array", "items": {"type": "string"}},
        "progress": {"type": "string"},
    },
    "required": ["facts", "open_questions", "progress"],
    "additionalProperties": False,
}
SYSTEM = ("You are the trajectory compressor of a tool-using agent. Read the task and the agent's steps so "
          "far, then reply with ONE JSON object and nothing else, matching this JSON schema:\n"
          + json.dumps(RECORD_SCHEMA) + "\n"
          "facts: every fact found so far that the task may need (keep numbers, names and ids exact); "
          "open_questions: what is still unknown; progress: one sentence on what has been done.")
RECORD_PREFIX = "Compressed record of the steps so far (JSON):\n"
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def transcript(messages: list[dict]) -> str:
    """Plain-text view of agent steps for the compressor's prompt."""
    lines = []
    for m in messages:
        if m["role"] == "assistant":
            if m.get("content"):
                lines.append(f"agent: {m['content']}")
            for c in m.get("tool_calls") or []:
                lines.append(f"call {c['function']['name']}({c['function']['arguments']})")
        elif m["role"] == "tool":
            lines.append(f"result: {m['content']}")
        else:
            lines.append(f"{m['role']}: {m['content']}")
    return "\n".join(lines)


def parse_record(text: str) -> dict:
    """The JSON record in a reply (code fences and text around the object tolerated); raises ValueError."""
    text = _FENCE.sub("", text.strip())
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("the reply holds no JSON object")
    try:
        record = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e.msg} at character {e.pos}") from e
    try:
        jsonschema.validate(record, RECORD_SCHEMA)
    except jsonschema.ValidationError as e:
        raise ValueError(f"does not match the schema: {'/'.join(map(str, e.absolute_path)) or 'record'}: "
                         f"{e.message}") from e
    return record


def steps_of(history: list[dict]) -> list[list[dict]]:
    """Split messages into steps: an assistant turn with the tool results that answer it."""
    steps: list[list[dict]] = []
    for m in history:
        if m["role"] == "tool" and steps:
            steps[-1].append(m)
        else:
            steps.append([m])
    return steps


@dataclass
class Compressor:
    client: ChatClient
    keep_last: int = 4  # steps kept by the fallback
    retries: int = 1  # re-asks after an invalid record
    max_tokens: int = 1024
    compressions: int = 0  # successful JSON records
    fallbacks: int = 0  # times the history was cut to the last steps instead
    invalid: int = 0  # invalid replies seen (each retry or fallback follows one)

    def compress(self, messages: list[dict], n_head: int) -> tuple[list[dict], dict]:
        """(new messages, log entry). `messages[:n_head]` is the task statement, kept verbatim."""
        head, history = messages[:n_head], messages[n_head:]
        ask = [{"role": "system", "content": SYSTEM},
               {"role": "user", "content": f"Task:\n{transcript(head)}\n\nSteps:\n{transcript(history)}"}]
        errors = []
        for attempt in range(1 + self.retries):
            try:
                reply = self.client.chat(ask, None, temperature=0.0, max_tokens=self.max_tokens).message
            except ClientError as e:
                errors.append(str(e))
                break
            try:
                record = parse_record(reply["content"])
            except ValueError as e:
                self.invalid += 1
                errors.append(str(e))
                ask = ask + [reply, {"role": "user", "content": f"That reply is invalid ({e}). Reply with the JSON "
                                                                 "object only."}]
                continue
            self.compressions += 1
            note = {"role": "user", "content": RECORD_PREFIX + json.dumps(record, ensure_ascii=False)}
            return head + [note], {"kind": "record", "record": record, "attempts": attempt + 1}
        self.fallbacks += 1
        prior = history[:1] if history and history[0]["content"].startswith(RECORD_PREFIX) else []
        kept = [m for step in steps_of(history[len(prior):])[-self.keep_last:] for m in step] if self.keep_last else []
        return head + prior + kept, {"kind": "fallback", "kept_steps": len(steps_of(kept)), "errors": errors}
