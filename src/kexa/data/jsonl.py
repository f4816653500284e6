"""JSONL lines -> rows, each with its `file:line` place, so a bad line is one error that names it.

    for at, row in iter_jsonl(path.read_text("utf-8").splitlines(), path):   # at = "data.jsonl:3"
        ...                                  # a line that is not JSON: ValueError "data.jsonl:3: invalid JSON (...)"

Blank lines are skipped (line numbers still count them). `error=` picks the exception a stage's reader raises
(PromptError, ...); `keep_bad=True` yields a line that is not JSON as (at, ValueError) instead of raising, for
readers that collect bad rows and go on (kexa.data.conversations, skip_bad). What a row must hold is the
caller's to check, with `at` in its message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(lines: Iterable[str], where: str | Path, error: type[Exception] = ValueError,
               bad: str = "invalid JSON", keep_bad: bool = False) -> Iterator[tuple[str, Any]]:
    """(f"{where}:{n}", parsed row) for each non-blank line n (from 1); a line that is not JSON raises
    error(f"{where}:{n}: {bad} (<reason> at column <c>)"), or with keep_bad is yielded as (place, ValueError)."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        at = f"{where}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            reason = f"{bad} ({e.msg} at column {e.colno})"
            if keep_bad:
                yield at, ValueError(reason)
                continue
            raise error(f"{at}: {reason}") from None
        yield at, row
