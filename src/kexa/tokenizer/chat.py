"""The K-EXAONE chat template: render conversations, parse model output, mask assistant tokens.

One source of truth: `chat_template.jinja`, rendered here with a Jinja environment configured like
`transformers`' (`trim_blocks`, `lstrip_blocks`, its `tojson`, `raise_exception`, and the
`{% generation %}` tag), and saved verbatim into `tokenizer_config.json`, so
`AutoTokenizer.apply_chat_template` renders exactly the same text (tests pin this).

Format (reference §7): `<|role|>\\n{content}<|endofturn|>\\n` per turn; tools declared first in a
`<|tool_declare|>` block, one JSON object per `<tool>`; assistant turns `<think>\\n{reasoning}\\n</think>\\n\\n`
+ content + `<tool_call>{"name": …, "arguments": …}</tool_call>` lines; tool results
`<tool_result>…</tool_result>`, consecutive ones in one `<|tool|>` turn. `enable_thinking` defaults to
True (K-EXAONE); the generation prompt is then `<|assistant|>\\n<think>\\n`, else the empty think
block `<|assistant|>\\n<think>\\n\\n</think>\\n\\n`. Reasoning of assistant turns before the last user
message is dropped (their think block is rendered empty), and so is all reasoning when
`enable_thinking=False`: a rendered conversation then always begins with the exact prompt that
produced its last answer. Contents are whitespace-stripped.

    from kexa.tokenizer.chat import render, parse_response
    render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import specials as S

CHAT_TEMPLATE: str = resources.files(__package__).joinpath("chat_template.jinja").read_text("utf-8")


class _GenerationTracker(Extension):
    """`{% generation %}…{% endgeneration %}`: records the character spans of the assistant's text
    (the same tag, and the same bookkeeping, as transformers' AssistantTracker)."""

    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        self._blocks: list[str] | None = None
        self._spans: list[tuple[int, int]] | None = None

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_track"), [], [], body).set_lineno(lineno)

    def _track(self, caller):
        text = caller()
        if self._spans is not None:
            start = len("".join(self._blocks))
            self._spans.append((start, start + len(text)))
        return text


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env, env.from_string(template)


def render_with_spans(
    messages: list[dict[str, Any]],
    tools: list[dict] | None = None,
    enable_thinking: bool = True,
    add_generation_prompt: bool = False,
    template: str | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The prompt text and the [start, end) character spans that the assistant generated."""
    env, compiled = _compile(template or CHAT_TEMPLATE)
    tracker = env.extensions[_GenerationTracker.identifier]
    blocks: list[str] = []
    tracker._blocks, tracker._spans = blocks, []
    try:
        for block in compiled.generate(
            messages=messages, tools=tools, enable_thinking=enable_thinking,
            add_generation_prompt=add_generation_prompt,
        ):
            blocks.append(block)
        spans = tracker._spans
    finally:
        tracker._blocks = tracker._spans = None
    return "".join(blocks), spans


def render(messages, tools=None, enable_thinking: bool = True, add_generation_prompt: bool = False,
           template: str | None = None) -> str:
    """Render a conversation as K-EXAONE prompt text."""
    return render_with_spans(messages, tools, enable_thinking, add_generation_prompt, template)[0]


_TOOL_CALL = re.compile(re.escape(S.TOOL_CALL_OPEN) + r"(.*?)" + re.escape(S.TOOL_CALL_CLOSE), re.S)


def parse_response(text: str) -> dict[str, Any]:
    """Model output (what follows the generation prompt) -> an assistant message.

    Returns `{"role": "assistant", "reasoning_content", "content", "tool_calls"}`. Reasoning is the
    text before `</think>` (an opening `<think>` is optional: the prompt usually holds it); output
    that opened a think block and never closed it is all reasoning. Text after `<|endofturn|>` is
    ignored. Tool calls are the JSON objects inside `<tool_call>` tags (OpenAI shape); a call that is
    not valid JSON stays in the content verbatim.
    """
    text = text.split(S.END_OF_TURN, 1)[0]
    reasoning = ""
    if S.THINK_CLOSE in text:
        head, text = text.split(S.THINK_CLOSE, 1)
        reasoning = head.split(S.THINK_OPEN, 1)[-1].strip()
    elif text.lstrip().startswith(S.THINK_OPEN):
        reasoning, text = text.lstrip()[len(S.THINK_OPEN):].strip(), ""
    calls: list[dict] = []

    def take(m: re.Match) -> str:
        try:
            obj = json.loads(m.group(1))
            name, args = obj["name"], obj.get("arguments", {})
        except (json.JSONDecodeError, KeyError, TypeError):
            return m.group(0)
        calls.append({"type": "function", "function": {"name": name, "arguments": args}})
        return ""

    content = _TOOL_CALL.sub(take, text).strip()
    return {"role": "assistant", "reasoning_content": reasoning, "content": content, "tool_calls": calls}


@dataclass
class ChatEncoding:
    text: str
    ids: list[int]
    assistant_mask: list[int]  # 1 where the token is the assistant's (train on it), else 0


def encode_chat(tokenizer, messages, tools=None, enable_thinking: bool = True,
                add_generation_prompt: bool = False, split_at_spans: bool = True) -> ChatEncoding:
    """Token ids of a rendered conversation plus the assistant-token mask for SFT.

    With `split_at_spans` (default) the prompt pieces and the assistant pieces are encoded
    separately and concatenated, so the ids of a prompt are exactly what inference sees when it
    encodes that prompt alone (a superword may otherwise straddle the generation-prompt boundary,
    e.g. the "\\n" after `<think>` with the first word of the reasoning). Without it the whole text is
    encoded at once — identical to `apply_chat_template(tokenize=True)` — and the mask runs from the token
    holding a span's first character to the one holding its last (transformers'
    `return_assistant_tokens_mask` rule).
    """
    text, spans = render_with_spans(messages, tools, enable_thinking, add_generation_prompt)
    if split_at_spans:
        ids: list[int] = []
        mask: list[int] = []
        cut = 0
        for start, end in spans + [(len(text), len(text))]:
            for piece, flag in ((text[cut:start], 0), (text[start:end], 1)):
                if piece:
                    piece_ids = tokenizer.encode(piece)
                    ids += piece_ids
                    mask += [flag] * len(piece_ids)
            cut = end
        return ChatEncoding(text, ids, mask)
    enc = tokenizer.hf.encode(text, add_special_tokens=False)
    mask = [0] * len(enc.ids)
    for start, end in spans:
        if end <= start:
            continue
        first, last = enc.char_to_token(start), enc.char_to_token(end - 1)
        if first is None or last is None:
            continue
        for i in range(first, last + 1):
            mask[i] = 1
    return ChatEncoding(text, list(enc.ids), mask)
