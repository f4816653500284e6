"""Memory-mapped token shards: a flat token stream per source, with document boundaries.

A shard set is a folder:
    shard_00000.bin   raw little-endian token ids, uint16 when vocab_size <= 65536 else uint32
    shard_00000.idx   int64 offsets of document starts in that shard, plus the end (n_docs + 1)
    meta.json         {"format", "dtype", "vocab_size", "eos_id", "shards": [{"tokens", "docs"}...],
                       "n_tokens", "n_docs", ...}   -- written last: a folder without it is incomplete
Each document is stored as its tokens followed by `eos_id` (when given), so a packed window that
crosses a document boundary sees the separator. Every file is written atomically (temp file, fsync,
rename) and meta.json last, so an interrupted build leaves no folder that looks complete.

    python -c "from kexa.data.shards import write_shards, TokenShards; \
write_shards([[1,2,3],[4,5]], '/tmp/sh', vocab_size=512, eos_id=0); print(TokenShards('/tmp/sh'))"
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

FORMAT = "kexa-token-shards-v1"
META = "meta.json"


class ShardError(ValueError):
    """A shard folder that is missing, incomplete or inconsistent."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids < 65536; larger vocabularies (K-EXAONE: 153,600) need uint32."""
    if vocab_size < 1:
        raise ShardError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shards(docs: Iterable[Sequence[int]], out_dir: str | Path, vocab_size: int, eos_id: int | None = None,
                 shard_tokens: int = 1 << 26, extra_meta: dict | None = None) -> dict:
    """Write token documents (lists/arrays of ids) as a shard set; returns the meta dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # the folder is incomplete until meta.json is rewritten
    dtype = token_dtype(vocab_size)
    shards: list[dict] = []
    buf: list[np.ndarray] = []
    starts: list[int] = [0]

    def flush() -> None:
        if len(starts) == 1:
            return
        i = len(shards)
        tokens = np.concatenate(buf).astype(dtype)
        _atomic_bytes(out / f"shard_{i:05d}.bin", tokens.tobytes())
        _atomic_bytes(out / f"shard_{i:05d}.idx", np.asarray(starts, dtype=np.int64).tobytes())
        shards.append({"tokens": int(tokens.size), "docs": len(starts) - 1})
        buf.clear()
        starts[:] = [0]

    for doc in docs:
        arr = np.asarray(doc, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
            raise ShardError(f"token id out of range [0, {vocab_size}): min {arr.min()} max {arr.max()}")
        if eos_id is not None:
            arr = np.append(arr, eos_id)
        if arr.size == 0:
            continue
        buf.append(arr)
        starts.append(starts[-1] + arr.size)
        if starts[-1] >= shard_tokens:
            flush()
    flush()
    if not shards:
        raise ShardError(f"no tokens to write into {out}")
    meta = {"format": FORMAT, "dtype": dtype.name, "vocab_size": vocab_size, "eos_id": eos_id, "shards": shards,
            "n_tokens": sum(s["tokens"] for s in shards), "n_docs": sum(s["docs"] for s in shards)}
    meta |= extra_meta or {}
    _atomic_bytes(out / META, json.dumps(meta, indent=1).encode())
    return meta


class TokenShards:
    """Read-only view of a shard set: `n_tokens`, `window(start, n)` across shards, document starts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / META
        if not meta_path.exists():
            raise ShardError(f"{self.path} is not a complete token-shard folder (no {META}; "
                             f"an interrupted build? rebuild it)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise ShardError(f"{meta_path}: unknown format {self.meta.get('format')!r}, expected {FORMAT!r}")
        dtype = np.dtype(self.meta["dtype"])
        self.vocab_size, self.eos_id = self.meta["vocab_size"], self.meta["eos_id"]
        self.arrays: list[np.memmap] = []
        for i, s in enumerate(self.meta["shards"]):
            f = self.path / f"shard_{i:05d}.bin"
            if not f.exists() or f.stat().st_size != s["tokens"] * dtype.itemsize:
                raise ShardError(f"{f}: missing or wrong size (expected {s['tokens']} {dtype.name} tokens)")
            self.arrays.append(np.memmap(f, dtype=dtype, mode="r"))
        self.offsets = np.cumsum([0] + [a.size for a in self.arrays])  # global start of each shard
        self.n_tokens = int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"TokenShards({str(self.path)!r}, tokens={self.n_tokens}, docs={self.meta['n_docs']})"

    def window(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) of the concatenated stream as int64 (may span shards)."""
        if start < 0 or start + n > self.n_tokens:
            raise IndexError(f"window [{start}, {start + n}) outside the {self.n_tokens}-token stream")
        parts, pos, end = [], start, start + n
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while pos < end:
            lo = pos - self.offsets[i]
            take = min(end, self.offsets[i + 1]) - pos
            parts.append(self.arrays[i][lo:lo + take])
            pos += take
            i += 1
        return np.concatenate(parts).astype(np.int64)

    def doc_starts(self) -> np.ndarray:
        """Global start offsets of every document (n_docs,), e.g. to select long documents."""
        out = []
        for i in range(len(self.arrays)):
            idx = np.fromfile(self.path / f"shard_{i:05d}.idx", dtype=np.int64)
            out.append(idx[:-1] + self.offsets[i])
        return np.concatenate(out)

