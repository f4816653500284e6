"""Reading training text: .txt (streamed in line-aligned blocks), .jsonl (a "text" field per line),
.parquet (a "text" column; needs pyarrow), and directories of those.

Invalid UTF-8 is an error by default — `InvalidUTF8Error` names the file and the byte offset — because
silently replacing bytes would teach the tokenizer U+FFFD. Pass `errors="replace"` to accept such files
(each bad byte becomes U+FFFD, which the byte-level tokenizer encodes like any other character).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
BLOCK_CHARS = 1 << 18  # yield ~256K characters at a time, cut after a newline


class InvalidUTF8Error(ValueError):
    """A training file is not valid UTF-8 (and errors='strict')."""


def group_inputs(paths: Iterable[str | os.PathLike]) -> dict[str, list[Path]]:
    """Training inputs as stage-2 balance groups: a corpus folder gives one group per domain (named by
    it), any other file or folder one group named by the argument as given."""
    groups: dict[str, list[Path]] = {}
    for p in map(Path, paths):
        if p.is_dir() and (p / "manifest.json").exists():
            domains = json.loads((p / "manifest.json").read_text("utf-8")).get("domains", {})
            for name, d in domains.items():
                groups.setdefault(name, []).append(p / d["files"]["train"]["txt"])
        else:
            groups.setdefault(str(p), []).extend(expand([p]))
    return groups


def expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; directories become their .txt/.jsonl/.parquet files (recursively, sorted),
    except a corpus folder from `kexa data corpus` (it has a manifest.json): its train .txt files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and (p / "manifest.json").exists():
            domains = json.loads((p / "manifest.json").read_text("utf-8")).get("domains", {})
            out += [p / d["files"]["train"]["txt"] for d in domains.values()]
        elif p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return out


def _decode_stream(path: Path, errors: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(1 << 22)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise InvalidUTF8Error(
                    f"{path}: invalid UTF-8 at byte {offset + e.start} ({e.reason}); fix the file or "
                    "pass errors='replace' (CLI: --utf8-errors replace) to map bad bytes to U+FFFD"
                ) from None
            if text:
                yield text
            if not raw:
                return
            offset += len(raw)


def iter_txt_blocks(path: Path, errors: str = "strict") -> Iterator[str]:
    """A .txt file as blocks of whole lines (newlines kept), each about BLOCK_CHARS long."""
    pending = ""
    for text in _decode_stream(path, errors):
        pending += text
        while len(pending) >= BLOCK_CHARS:
            cut = pending.rfind("\n", 0, BLOCK_CHARS * 2)
            cut = len(pending) if cut < 0 else cut + 1
            yield pending[:cut]
            pending = pending[cut:]
    if pending:
        yield pending


def iter_documents(path: Path, errors: str = "strict", field: str = "text") -> Iterator[str]:
    """Documents of one file: a .txt file is one document; .jsonl/.parquet give one per record."""
    suffix = path.suffix
    if suffix == ".jsonl":
        from ..data.jsonl import iter_jsonl  # here, not at the top: kexa.data imports this module
        lines = "".join(_decode_stream(path, errors)).splitlines()
        for at, rec in iter_jsonl(lines, path, bad="not a JSON line"):
            text = rec.get(field, rec.get("content")) if isinstance(rec, dict) else None
            if not isinstance(text, str):
                raise ValueError(f"{at}: record has no string field {field!r}")
            yield text
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(
                f"{path}: reading .parquet needs pyarrow (pip install pyarrow), which is not installed"
            ) from None
        table = pq.read_table(path, columns=[field])
        for text in table.column(field).to_pylist():
            if isinstance(text, str):
                yield text
    else:
        yield "".join(_decode_stream(path, errors))


def iter_texts(paths: Iterable[str | os.PathLike], errors: str = "strict") -> Iterator[str]:
    """Training text from files/directories, as strings of bounded size (for the trainers)."""
    for path in expand(paths):
        if path.suffix in (".jsonl", ".parquet"):
            yield from iter_documents(path, errors)
        else:
            yield from iter_txt_blocks(path, errors)
