"""Long-document stream for context extension: whole documents, packed without cutting, per stage length.

K-EXAONE's extension stages train on "long documents consumed whole" (report §3.2) so the model
sees real dependencies across the new length. The pre-training loader cuts a flat token stream into
windows wherever they fall; this module instead re-packs the documents of token shards into
sequences of exactly `seq_len` tokens:

- every document that fits (its tokens + EOS <= seq_len) lands whole in one sequence; documents are
  packed first-fit-decreasing (longest first), so the sequences are mostly one long document plus
  shorter ones filling the gap; what is left at the end of a sequence is EOS padding;
- a document longer than the stage length cannot be seen whole: it is split into consecutive
  seq_len - 1 token pieces (each its own sequence) - the only cutting this stream does;
- every sequence ends with EOS, so the loader's window of seq_len + 1 tokens (aligned on the
  sequences, as the PackedLoader's windows are) never trains across two sequences: the loader masks
  the label that follows an EOS, and labels of EOS padding are masked the same way.

    python -c "from kexa.data.longdoc import pack_documents; import numpy as np; \
print(pack_documents([np.arange(1, 6), np.arange(1, 3)], seq_len=8, eos_id=0))"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .shards import TokenShards, write_shards


def documents(shards: TokenShards, min_tokens: int = 1) -> list[np.ndarray]:
    """The documents of a shard set (without their EOS separators), those of >= min_tokens tokens."""
    starts = shards.doc_starts()
    ends = np.append(starts[1:], shards.n_tokens)
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        doc = shards.window(s, e - s)
        if shards.eos_id is not None and doc.size and doc[-1] == shards.eos_id:
            doc = doc[:-1]
        if doc.size >= min_tokens:
            out.append(doc)
    return out


def pack_documents(docs: Iterable[np.ndarray], seq_len: int, eos_id: int) -> list[np.ndarray]:
    """Sequences of exactly seq_len tokens (each ending in EOS) holding whole documents (FFD packing)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    pieces: list[np.ndarray] = []
    for doc in docs:
        doc = np.asarray(doc, dtype=np.int64)
        for s in range(0, doc.size, seq_len - 1):  # only documents longer than the stage are cut
            pieces.append(doc[s:s + seq_len - 1])
    pieces.sort(key=len, reverse=True)
    bins: list[list[np.ndarray]] = []
    free: list[int] = []  # tokens still free in each sequence
    for piece in pieces:
        need = piece.size + 1  # the document and its EOS
        i = next((j for j, f in enumerate(free) if f >= need), None)
        if i is None:
            bins.append([])
            free.append(seq_len)
            i = len(bins) - 1
        bins[i] += [piece, np.array([eos_id])]
        free[i] -= need
    return [np.concatenate(b + [np.full(f, eos_id)]) for b, f in zip(bins, free)]


def write_longdoc_shards(sources: Sequence[TokenShards], out_dir: str | Path, seq_len: int, min_tokens: int = 1,
                         seed: int = 0) -> dict:
    """Pack the documents of `sources` for one stage length and write them as a shard set.

    Sequences are stored in a seeded shuffled order; each is written as seq_len - 1 tokens plus the
    shard writer's EOS, so the stream is a concatenation of seq_len-token sequences."""
    if not sources:
        raise ValueError("write_longdoc_shards needs at least one source")
    eos = {s.eos_id for s in sources}
    if len(eos) != 1 or None in eos:
        raise ValueError(f"long-document sources must share one EOS id, got {sorted(map(str, eos))}")
    eos_id = eos.pop()
    docs = [d for s in sources for d in documents(s, min_tokens)]
    if not docs:
        raise ValueError(f"no document of >= {min_tokens} tokens in {[str(s.path) for s in sources]}")
    seqs = pack_documents(docs, seq_len, eos_id)
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(seqs))
    lengths = np.array([d.size for d in docs])
    meta = {"kind": "longdoc", "seq_len": seq_len, "documents": len(docs), "sequences": len(seqs),
            "doc_tokens_median": int(np.median(lengths)), "doc_tokens_max": int(lengths.max()),
            "fill": float(lengths.sum() + len(docs)) / (len(seqs) * seq_len)}
    return write_shards((seqs[i][:-1] for i in order), out_dir, sources[0].vocab_size, eos_id, extra_meta=meta)
