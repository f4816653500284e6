"""User chat data for post-training, in the formats people bring from TRL.

Rows are either conversational — a `messages` column, a list of `{"role", "content"}` turns — or
prompt–completion — `prompt` and `completion`, each a string (the prompt becomes the user turn, the
completion the assistant turn) or a list of turns (concatenated). An optional `tools` column holds
OpenAI-style function declarations (a list, or that list as a JSON string). Sources: a JSONL file
(one row per line), a JSON file holding a list of rows, a parquet file (pyarrow), or — when the path
does not exist — a dataset name for `datasets.load_dataset(name, split=…, data_files=…)`
(with `name="json"` and local `data_files` that path works offline, and is how it is tested).

Every row is checked and normalised into the shape kexa's chat template renders:
- roles are system / user / assistant / tool; content is a string (text parts of a content list are
  joined; a tool turn's object content is JSON-encoded) that holds no turn-structure special token
  (`<|endofturn|>`, `<|user|>`, …: tokenised, they would forge turns);
- assistant reasoning comes from `reasoning_content` (or vLLM's newer `reasoning`), or from a leading
  `<think>…</think>` inside `content`, which is moved into `reasoning_content` — the template reads
  reasoning only from that field and would otherwise train on literal tags after an empty think block;
- tool calls (`{"type": "function", "function": {"name", "arguments"}}` or `{"name", "arguments"}`,
  arguments an object or a JSON string) become the OpenAI shape with object arguments;
- a conversation needs an assistant turn to learn from; with a tokenizer and `max_tokens`, a
  conversation longer than the sequence length is an error too (SFT never splits a conversation).
A bad row raises `DataError` naming the file and line (parquet/hub: row), e.g.
`data/chat.jsonl:17: message 3: unknown role 'bot' (expected system, user, assistant, tool)`;
with `skip_bad=True` bad rows are skipped, counted and their errors kept.

    from kexa.data.conversations import load_conversations
    data = load_conversations("chat.jsonl", skip_bad=True)
    data.conversations[0].messages, data.skipped, data.errors[:3]
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kexa.tokenizer import specials as S

from .jsonl import iter_jsonl

ROLES = ("system", "user", "assistant", "tool")
# turn-structure tokens: inside a message's text they would forge turns once tokenised
_STRUCTURE = (S.SYSTEM, S.USER, S.ASSISTANT, S.TOOL, S.END_OF_TURN, S.TOOL_DECLARE, S.PAD, S.BOS)
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)


class DataError(ValueError):
    """A data file or row that cannot be used; the message names the file and line."""


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    source: str  # "file:line" or "file: row N": where the row came from, for error messages

    @property
    def has_reasoning(self) -> bool:
        return any(m.get("reasoning_content") for m in self.messages if m["role"] == "assistant")

    def encode(self, tokenizer, reasoning: bool | None = None):
        """`encode_chat` of this conversation (ids + assistant mask); `reasoning` defaults to whether
        the data carries reasoning (no reasoning: the non-reasoning mode's empty think block)."""
        from kexa.tokenizer.chat import encode_chat

        mode = self.has_reasoning if reasoning is None else reasoning
        return encode_chat(tokenizer, self.messages, tools=self.tools, enable_thinking=mode)


@dataclass
class Loaded:
    conversations: list[Conversation]
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def _text(content: Any, where: str) -> str:
    text = _joined(content, where)
    forged = [t for t in _STRUCTURE if t in text]
    if forged:
        raise ValueError(f"{where}: text contains the special token {forged[0]!r}")
    return text


def _joined(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # TRL/OpenAI content parts
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"{where}: content part of type {kind!r} is not supported (text only)")
        return "".join(parts)
    raise ValueError(f"{where}: content must be a string, got {type(content).__name__}")


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise ValueError(f"{where}: a tool call must be an object, got {type(call).__name__}")
    fn = call.get("function", call)
    name, args = (fn.get("name"), fn.get("arguments", {})) if isinstance(fn, dict) else (None, None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: tool call without a function name")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: tool call arguments are not valid JSON ({e.msg})") from None
    if not isinstance(args, dict):
        raise ValueError(f"{where}: tool call arguments must be an object, got {type(args).__name__}")
    return {"type": "function", "function": {"name": name, "arguments": args}}


def _message(m: Any, i: int) -> dict[str, Any]:
    where = f"message {i + 1}"
    if not isinstance(m, dict):
        raise ValueError(f"{where}: must be an object with 'role' and 'content', got {type(m).__name__}")
    role = m.get("role")
    if role not in ROLES:
        raise ValueError(f"{where}: unknown role {role!r} (expected {', '.join(ROLES)})")
    content = m.get("content")
    if role == "tool" and isinstance(content, (dict, list)) and not (
            isinstance(content, list) and all(isinstance(p, dict) and "type" in p for p in content)):
        content = json.dumps(content, ensure_ascii=False)
    out: dict[str, Any] = {"role": role}
    if role == "assistant":
        calls = m.get("tool_calls") or []
        if not isinstance(calls, list):
            raise ValueError(f"{where}: tool_calls must be a list")
        content = "" if content is None and calls else content
        if content is None:
            raise ValueError(f"{where}: assistant turn without content or tool calls")
        text = _text(content, where)
        reasoning = m.get("reasoning_content") or m.get("reasoning")
        think = _THINK.match(text)
        if think:
            if reasoning:
                raise ValueError(f"{where}: reasoning given twice (reasoning_content and <think> in content)")
            reasoning, text = think.group(1).strip(), text[think.end():]
        if "<think>" in text or "</think>" in text:
            raise ValueError(f"{where}: stray <think>/</think> in assistant content (only a leading think block)")
        out["content"] = text
        if reasoning is not None:
            if not isinstance(reasoning, str):
                raise ValueError(f"{where}: reasoning_content must be a string")
            if reasoning.strip():
                out["reasoning_content"] = _text(reasoning.strip(), where)
        if calls:
            out["tool_calls"] = [_tool_call(c, f"{where}, tool call {j + 1}") for j, c in enumerate(calls)]
        return out
    if content is None:
        raise ValueError(f"{where}: {role} turn without content")
    out["content"] = _text(content, where)
    return out


def _turns(value: Any, column: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user" if column == "prompt" else "assistant", "content": value}]
    if isinstance(value, list):
        return list(value)
    raise ValueError(f"'{column}' must be a string or a list of messages, got {type(value).__name__}")


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as e:
            raise ValueError(f"'tools' is a string that is not valid JSON ({e.msg})") from None
        if value is None:
            return None
    if not isinstance(value, list):
        raise ValueError(f"'tools' must be a list of function declarations, got {type(value).__name__}")
    for j, tool in enumerate(value):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError(f"tool {j + 1}: a declaration needs a function name")
    return value or None


def normalize_row(row: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """One dataset row -> (messages, tools) in kexa's chat-template shape; ValueError(reason) if bad."""
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    if row.get("messages") is not None:
        raw = row["messages"]
        if not isinstance(raw, list):
            raise ValueError(f"'messages' must be a list, got {type(raw).__name__}")
    elif row.get("prompt") is not None and row.get("completion") is not None:
        raw = _turns(row["prompt"], "prompt") + _turns(row["completion"], "completion")
    elif "text" in row:
        raise ValueError("a 'text' row is language-modelling data (pre-training), not a conversation")
    else:
        columns = ", ".join(map(str, row)) or "none"
        raise ValueError(f"missing 'messages' (or 'prompt' and 'completion'); columns: {columns}")
    messages = [_message(m, i) for i, m in enumerate(raw)]
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant turn to learn from")
    return messages, _tools(row.get("tools"))


def _rows(source: str, split: str, data_files, load_kwargs) -> Iterator[tuple[str, Any]]:
    """(where, row) for every row of a file or dataset; `row` is an Exception for an unreadable line."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                rows = pq.read_table(path).to_pylist()
            except Exception as e:  # pyarrow raises several types for a broken file
                raise DataError(f"{path}: not a readable parquet file ({e})") from None
            for i, row in enumerate(rows):
                yield f"{path}: row {i + 1}", row
            return
        with open(path, encoding="utf-8") as f:
            try:
                text = f.read()
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
            for i, row in enumerate(rows):
                yield f"{path}: row {i + 1}", row
            return
        yield from iter_jsonl(text.splitlines(), path, keep_bad=True)
        return
    if path.exists():
        raise DataError(f"{path}: is a directory; give a .jsonl, .json or .parquet file")
    if source.endswith((".jsonl", ".json", ".parquet")) and data_files is None:
        raise DataError(f"{source}: no such file")
    try:
        import datasets

        ds = datasets.load_dataset(source, split=split, data_files=data_files, **load_kwargs)
    except Exception as e:  # offline, unknown name, bad split: one line that says which
        raise DataError(f"{source}: cannot load dataset (split {split!r}): {type(e).__name__}: {e}") from None
    for i, row in enumerate(ds):
        yield f"{source}[{split}]: row {i + 1}", row


def load_conversations(source: str | Path, *, skip_bad: bool = False, split: str = "train", data_files=None,
                       tokenizer=None, max_tokens: int | None = None, **load_kwargs) -> Loaded:
    """Read and validate every conversation of `source` (see the module docstring).

    With `tokenizer` and `max_tokens`, a conversation whose rendered tokens (reasoning mode, the longer
    one) exceed `max_tokens` is a bad row. `skip_bad=False` raises `DataError` at the first bad row.
    `load_kwargs` go to `datasets.load_dataset` (e.g. `cache_dir`, `name`) for hub datasets.
    """
    out = Loaded([])
    for where, row in _rows(str(source), split, data_files, load_kwargs):
        try:
            if isinstance(row, Exception):
                raise row
            messages, tools = normalize_row(row)
            conv = Conversation(messages, tools, where)
            if tokenizer is not None and max_tokens is not None:
                n = len(conv.encode(tokenizer, reasoning=True).ids)
                if n > max_tokens:
                    raise ValueError(f"conversation is {n} tokens, longer than the sequence length {max_tokens}")
        except ValueError as e:
            if not skip_bad:
                raise DataError(f"{where}: {e}") from None
            out.skipped += 1
            out.errors.append(f"{where}: {e}")
            continue
        out.conversations.append(conv)
    return out
