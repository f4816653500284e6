"""Model text -> OpenAI message parts, whole or streamed: reasoning, content, tool calls, stop strings.

One parser: `kexa.tokenizer.chat.parse_response`, applied to the assistant turn as the template
writes it (the generation prompt's `<think>\\n` — or the closed empty think block when thinking is
off — followed by the model's text). Streaming re-parses the text received so far and sends the
growth of the reasoning and content strings and the newly completed tool calls; text that may still
change meaning is held back: an unclosed `<tool_call>`, and a trailing partial `</think>`,
`<tool_call>`, `<think>` or `<|endofturn|>`. So the concatenated deltas equal the non-streamed message by
construction (tests pin it). Re-parsing costs O(text) per step, small next to a decode step.

Stop strings (OpenAI `stop`) cut the generated text before the first match, which is not included
(vLLM's default); while streaming, the last len(longest stop) - 1 characters wait for the next step.
"""

from __future__ import annotations

import json

from ..tokenizer import specials as S
from ..tokenizer.chat import parse_response

THINKING_HEAD = f"{S.THINK_OPEN}\n"  # what the generation prompt ends with when thinking is on
PLAIN_HEAD = f"{S.THINK_OPEN}\n\n{S.THINK_CLOSE}\n\n"  # ... and when it is off


def split_reply(text: str, parse_tools: bool = True) -> dict:
    """The assistant turn text (head + model output) -> {"reasoning_content", "content", "tool_calls"}.
    Without `parse_tools` (no tools declared, or tool_choice "none") tool-call tags stay in the content."""
    msg = parse_response(text)
    if not parse_tools and msg["tool_calls"]:
        body = text.split(S.END_OF_TURN, 1)[0]
        msg["content"] = (body.split(S.THINK_CLOSE, 1)[1] if S.THINK_CLOSE in body else body).strip()
        msg["tool_calls"] = []
    return msg


def _partial_tag_cut(text: str, tags: tuple[str, ...]) -> int:
    """Length of `text` without a trailing proper prefix of any tag (which may become that tag)."""
    cut = len(text)
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), 0, -1):
            if text.endswith(tag[:n]):
                cut = min(cut, len(text) - n)
                break
    return cut


class ReplyStream:
    """Incremental split_reply: push text pieces, get (reasoning delta, content delta, new tool calls)."""

    def __init__(self, head: str, parse_tools: bool):
        self.text, self.parse_tools = head, parse_tools
        self.reasoning, self.content, self.calls = "", "", 0

    def push(self, piece: str, final: bool = False) -> tuple[str, str, list[dict]]:
        self.text += piece
        view = self.text
        if not final:
            if self.parse_tools:
                open_at = view.rfind(S.TOOL_CALL_OPEN)
                if open_at >= 0 and view.find(S.TOOL_CALL_CLOSE, open_at) < 0:
                    view = view[:open_at]  # an unclosed call: wait for its end
            view = view[:_partial_tag_cut(view, (S.THINK_OPEN, S.THINK_CLOSE, S.TOOL_CALL_OPEN, S.END_OF_TURN))]
        msg = split_reply(view, self.parse_tools)
        reasoning, content = msg["reasoning_content"], msg["content"]
        d_reasoning = reasoning[len(self.reasoning):] if reasoning.startswith(self.reasoning) else ""
        d_content = content[len(self.content):] if content.startswith(self.content) else ""
        self.reasoning += d_reasoning
        self.content += d_content
        new_calls = msg["tool_calls"][self.calls:]
        self.calls += len(new_calls)
        return d_reasoning, d_content, new_calls


def arguments_json(arguments) -> str:
    """OpenAI carries tool arguments as a JSON string."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


class StopStrings:
    """Cuts generated text at the first stop string; holds back what could still become one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max(map(len, self.stops), default=1) - 1
        self.text, self.sent = "", 0
        self.stopped = False

    def push(self, piece: str, final: bool = False) -> str:
        """Text that can be released now (all of it once final or stopped)."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self.hold)
        self.text += piece
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True
        end = len(self.text) if (final or self.stopped) else max(self.sent, len(self.text) - self.hold)
        out, self.sent = self.text[self.sent:end], end
        return out
