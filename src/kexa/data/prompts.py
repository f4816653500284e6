"""Prompt sets for preference learning (`kexa preference`): user prompts per domain, no reference answers.

    from kexa.data.prompts import load_prompts, task_prompt, rubric_path
    rows = load_prompts("builtin:chat", domain="chat")     # PromptRow(messages, domain, language, split, ...)
    rows = load_prompts("my_prompts.jsonl", domain="chat")  # TRL's prompt-only format

Built in (src/kexa/data/prompt_sets/*.jsonl, written natively in the six languages ko/en/es/de/ja/vi):
    chat       everyday questions and advice (3 per language)
    creative   poems, story openings, slogans (3 per language)
    safety     harmful requests (should_refuse = true) each beside a benign look-alike that shares its
               words ("kill a process", "recognise a phishing email"; should_refuse = false), so a refusal
               rule penalises over-refusal too (2 pairs per language). Issue 19's safety suite may adopt it.
Instruction following and tool use come from kexa.tasks (`instruct`, `tool`): natively phrased, generated,
and verifiable (`task_prompt` turns a task problem into a PromptRow that carries its verifier's data).
Rubrics for the judge, one per domain: src/kexa/data/rubrics/<domain>.json (kexa.rewards.Rubric).

File format (JSONL, one object a line; TRL's prompt-only conventions): `messages` (or `prompt`: a string or
a list of messages) ending with a user turn; optional `language` (one of the six), `split` ("train" |
"heldout"; default: by a stable hash of the prompt, kexa.tasks' 20 % held-out share), `should_refuse`
(bool, safety prompts), `tools` (OpenAI function schemas). A bad line is a PromptError naming file:line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsonl import iter_jsonl

LANGS = ("ko", "en", "es", "de", "ja", "vi")
SPLITS = ("train", "heldout")
DATA_DIR = Path(__file__).parent
BUILTIN = {p.stem: p for p in sorted((DATA_DIR / "prompt_sets").glob("*.jsonl"))}
RUBRICS = {p.stem: p for p in sorted((DATA_DIR / "rubrics").glob("*.json"))}


class PromptError(ValueError):
    """A prompt file or row that cannot be used, with file:line and the reason."""


@dataclass
class PromptRow:
    messages: list[dict[str, Any]]  # the prompt turns, the last one the user's
    domain: str  # chat | instruct | tool | creative | safety | a user's source name
    language: str | None = None  # the language the reply should be in (None: detect from the prompt)
    split: str = "train"
    should_refuse: bool | None = None  # safety prompts: refuse (True) / must not refuse (False)
    tools: list[dict] | None = None
    task: str | None = None  # the kexa.tasks verifier of this row (instruction constraints, tool calls)
    example: Any = None  # that task's Example
    origin: str = ""  # file:line or task:key

    def columns(self) -> dict[str, Any]:
        """The reward columns of this row (kexa.rewards keyword names)."""
        return {"domain": self.domain, "language": self.language, "should_refuse": self.should_refuse,
                "task": self.task, "example": self.example}


def resolve(path: str) -> Path:
    """`builtin:<domain>` -> the shipped file; anything else is a path."""
    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        if name not in BUILTIN:
            raise PromptError(f"no built-in prompt set {name!r}; built in: {sorted(BUILTIN)}")
        return BUILTIN[name]
    p = Path(path)
    if not p.is_file():
        raise PromptError(f"prompt file {p} does not exist")
    return p


def rubric_path(domain: str) -> Path:
    """The built-in rubric of a domain (chat, instruct, tool, creative, safety)."""
    if domain not in RUBRICS:
        raise PromptError(f"no built-in rubric for domain {domain!r}; built in: {sorted(RUBRICS)} "
                          f"(give [judge] rubrics = {{{domain} = 'path.json'}})")
    return RUBRICS[domain]


def _row(obj: Any, domain: str, where: str) -> PromptRow:
    from ..tasks.base import split_of
    if not isinstance(obj, dict):
        raise PromptError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"messages", "prompt", "language", "split", "should_refuse", "tools"})
    if unknown:
        raise PromptError(f"{where}: unknown key(s) {unknown}; valid: messages | prompt, language, split, "
                          f"should_refuse, tools")
    messages = obj.get("messages", obj.get("prompt"))
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not (isinstance(messages, list) and messages and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                            and m.get("role") in ("system", "user", "assistant", "tool")
                                                            for m in messages)):
        raise PromptError(f"{where}: `messages` (or `prompt`) must be a string or a non-empty list of "
                          f"{{role, content}} messages")
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise PromptError(f"{where}: the prompt must end with a non-empty user turn")
    language = obj.get("language")
    if language is not None and language not in LANGS:
        raise PromptError(f"{where}: language {language!r} is not one of {list(LANGS)}")
    split = obj.get("split") or split_of(json.dumps(messages, ensure_ascii=False, sort_keys=True))
    if split not in SPLITS:
        raise PromptError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
    refuse = obj.get("should_refuse")
    if refuse is not None and not isinstance(refuse, bool):
        raise PromptError(f"{where}: should_refuse must be true or false, got {refuse!r}")
    tools = obj.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise PromptError(f"{where}: tools must be a list of function schemas")
    return PromptRow(messages, domain, language, split, refuse, tools, origin=where)


def load_prompts(path: str, domain: str) -> list[PromptRow]:
    """Every row of a prompt file (JSONL) as PromptRows of `domain`; PromptError on the first bad line."""
    p = resolve(path)
    rows = []
    with open(p, encoding="utf-8") as f:
        for at, obj in iter_jsonl(f, p, error=PromptError):
            rows.append(_row(obj, domain, at))
    if not rows:
        raise PromptError(f"{p}: no prompts")
    return rows


def task_prompt(task, example, domain: str) -> PromptRow:
    """A kexa.tasks problem as a prompt: its messages and tools, and its verifier (task name + Example). The
    reply's language is the problem's, except for instructions that ask for another language."""
    meta = example.meta
    language = meta.get("target") if meta.get("kind") == "language" else meta.get("lang")
    return PromptRow([dict(m) for m in example.messages], domain, language, meta.get("split", "train"),
                     tools=example.tools, task=task.name, example=example, origin=f"task:{meta.get('key')}")
