"""The reserved special-token table: ids 0..127, fixed, the same in every kexa tokenizer.

K-EXAONE's published ids are kept where they are known (reference §7): PAD 0, BOS 1,
`<|system|>` 50, `<|user|>` 51, `<|assistant|>` 52, `<|endofturn|>` 53 (the EOS: generation stops
there), `<think>` 54, `</think>` 55, and the leftover multimodal tokens 66/67/68/73/74. The ids of the
tool tokens are not published; kexa puts them at the free ids 56..63 in the order the template uses
them. Every other id below 128 is a `<|reserved_special_token_N|>` placeholder so that later
additions never shift the learned vocabulary (which starts at 128 with the 256 byte symbols).

The string forms of PAD/BOS (`[PAD]`, `[BOS]`) follow the EXAONE family; they are not confirmed for
K-EXAONE, which is harmless: only the ids are baked into checkpoints.

Role/turn tokens are `special=True` (dropped by `decode(skip_special_tokens=True)`); the
`<think>`/tool tags are added tokens with `special=False`, so decoded model output keeps them and
can be parsed (Qwen's convention for `<tool_call>`).
"""

from __future__ import annotations

NUM_RESERVED = 128

PAD, BOS = "[PAD]", "[BOS]"
SYSTEM, USER, ASSISTANT, TOOL = "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"
END_OF_TURN = "<|endofturn|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_DECLARE = "<|tool_declare|>"
TOOL_OPEN, TOOL_CLOSE = "<tool>", "</tool>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_RESULT_OPEN, TOOL_RESULT_CLOSE = "<tool_result>", "</tool_result>"

# id -> (content, special)
KNOWN: dict[int, tuple[str, bool]] = {
    0: (PAD, True),
    1: (BOS, True),
    50: (SYSTEM, True),
    51: (USER, True),
    52: (ASSISTANT, True),
    53: (END_OF_TURN, True),
    54: (THINK_OPEN, False),
    55: (THINK_CLOSE, False),
    # kexa's choice (ids not published): the tool tokens at the free ids after </think>
    56: (TOOL_DECLARE, True),
    57: (TOOL, True),
    58: (TOOL_OPEN, False),
    59: (TOOL_CLOSE, False),
    60: (TOOL_CALL_OPEN, False),
    61: (TOOL_CALL_CLOSE, False),
    62: (TOOL_RESULT_OPEN, False),
    63: (TOOL_RESULT_CLOSE, False),
    66: ("<|vision_pad|>", True),
    67: ("<|image_pad|>", True),
    68: ("<|video_pad|>", True),
    73: ("<vision>", True),
    74: ("</vision>", True),
}


def reserved_tokens() -> list[tuple[str, bool]]:
    """The 128 (content, special) pairs, index = token id."""
    return [KNOWN.get(i, (f"<|reserved_special_token_{i}|>", True)) for i in range(NUM_RESERVED)]


def token_id(content: str) -> int:
    """The fixed id of a reserved token by its string (KeyError if it is not one)."""
    for i, (text, _) in enumerate(reserved_tokens()):
        if text == content:
            return i
    raise KeyError(content)
