"""Pre-tokenization rules: where BPE may merge (stage 1) and where superwords may form (stage 2).

A `BoundaryRule` is a pair of regexes plus the two SuperBPE merge constraints. Each regex is used by
the Hugging Face `Split(…, behavior="isolated")` pre-tokenizer followed by `ByteLevel(use_regex=False)`,
so training and inference split text with the same engine (Oniguruma inside `tokenizers`).

Rules (reference: k-exaone-training-recipe.md §1.2, §1.5):

- ``superbpe`` (default) — SuperBPE's own curriculum. Stage 1 uses a multilingual GPT-4o-style
  regex (letter runs with one optional leading non-letter; CJK split by script: Han, Hiragana,
  Katakana(+ー) runs, so Japanese has word-like units; digits in groups of ≤3; punctuation runs
  absorbing trailing line breaks or '/'; line-break runs; space runs). Stage 2 uses SuperBPE's
  looser regex, which only isolates digit groups, runs of ≥2 punctuation marks and trailing
  space runs — letters, single spaces, single punctuation and newlines may merge across. Merge
  constraints (alisawuffles/tokenizers-superbpe, "mw4_colon"): a new stage-2 token may hold at most
  4 words (non-empty pieces between spaces) and may not contain ": ".
- ``kexaone`` — K-EXAONE's released pre-tokenizer (llama.cpp `exaone-moe`): superwords only over
  letter runs joined by single spaces; digits single; punctuation and line breaks separate. Its stage
  1 is the same regex without the in-run spaces.

Plain BPE (`--plain`) trains on the chosen rule's stage-1 regex and also encodes with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Regex, pre_tokenizers

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
# one optional leading character that is neither a letter, a digit nor a line break (usually a space)
_LEAD = r"[^\r\n\p{L}\p{N}]?"
# letters that are not Han/kana (Latin with diacritics, Hangul, Cyrillic, …), each with its marks
_WORD = r"[^\P{L}\p{Han}\p{Hiragana}\p{Katakana}ー]\p{M}*"

MULTILINGUAL_STAGE1 = "|".join([
    _CONTRACTIONS,
    rf"{_LEAD}(?:{_WORD})+",
    rf"{_LEAD}(?:\p{{Han}}\p{{M}}*)+",
    rf"{_LEAD}(?:\p{{Hiragana}}\p{{M}}*)+",
    rf"{_LEAD}(?:[\p{{Katakana}}ー]\p{{M}}*)+",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])

SUPERBPE_STAGE2 = r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]{2,}[\r\n/]*| +(?!\S)"

KEXAONE_STAGE2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+"
)
KEXAONE_STAGE1 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*)+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+"
)

SPACE = "Ġ"  # the byte-level symbol of b" "


@dataclass(frozen=True)
class BoundaryRule:
    """Where merges may happen. `max_words`/`forbid_colon_space` apply to stage-2 merges only."""

    name: str
    stage1: str
    stage2: str
    max_words: int | None = 4
    forbid_colon_space: bool = True

    def allows(self, token: str) -> bool:
        """May a stage-2 merge create this (byte-level) token?"""
        if self.forbid_colon_space and ":" + SPACE in token:
            return False
        if self.max_words is not None and word_count(token) > self.max_words:
            return False
        return True


RULES: dict[str, BoundaryRule] = {
    "superbpe": BoundaryRule("superbpe", MULTILINGUAL_STAGE1, SUPERBPE_STAGE2),
    "kexaone": BoundaryRule("kexaone", KEXAONE_STAGE1, KEXAONE_STAGE2),
}


def get_rule(rule: str | BoundaryRule) -> BoundaryRule:
    if isinstance(rule, BoundaryRule):
        return rule
    if rule not in RULES:
        raise ValueError(f"unknown boundary rule {rule!r}; choose one of {sorted(RULES)}")
    return RULES[rule]


def word_count(token: str) -> int:
    """Words in a byte-level token: non-empty pieces between space bytes (space runs count once)."""
    return sum(1 for piece in token.split(SPACE) if piece)


def byte_level_pre_tokenizer(regex: str) -> pre_tokenizers.PreTokenizer:
    """Split on `regex` (matches isolated), then map bytes to the GPT-2 byte alphabet."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
