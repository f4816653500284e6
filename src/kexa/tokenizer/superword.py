"""SuperBPE stage 2: learn superword merges on top of stage-1 tokens, exactly, with constraints.

The stock `tokenizers` BpeTrainer cannot resume from existing merges nor filter merges, and
post-filtering its output is only an approximation (reference §1.4). This is the exact alternative:
ordinary incremental BPE over the *unique* stage-2 chunks (each weighted by its count), every chunk
already segmented by the stage-1 merges, with a per-merge admissibility test (`BoundaryRule.allows`:
≤ 4 words per token, no ": "). A rejected pair is banned for good — token strings are fixed, so the
test never changes — and the next most frequent pair is taken, as in the SuperBPE fork's trainer.

Data layout: all chunks concatenated into flat int arrays `sym` (token id, -1 once merged away),
`nxt`/`prv` (doubly linked list inside a chunk, -1 at its ends) and `wt` (the chunk's count). Pair
counts live in a dict keyed by `a << 21 | b`; a lazy max-heap picks the best pair; occurrences of the
initial pairs come from one stable argsort (numpy), those of later pairs from per-pair position
lists. Each merge then costs time proportional to its frequency, not to the corpus size.

Weights (language-balanced stage 2, `train.stage2_weights`): each chunk may also carry a ranking
weight apart from its count. Pairs are then picked by summed weight, while `min_frequency` still
applies to the raw count (a pair seen once stays unmerged however heavy its language), so a second
dict `seen` of raw pair counts is kept next to `pair_count`; without weights `seen` is `pair_count`.

Semantics match HF's BPE encoder: occurrences are merged left to right (so `a a a` -> `aa a`), and
ties between equally frequent pairs go to the smaller (left id, right id). The test suite checks
that the segmentation reached here equals what the final `tokenizers` model produces.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Sequence

import numpy as np

SHIFT = 21  # pair key = left << SHIFT | right; ids < 2**21 (2M) are plenty
MASK = (1 << SHIFT) - 1


def learn_merges(
    chunks: Sequence[Sequence[int]],
    counts: Sequence[int],
    id_to_token: list[str],
    num_merges: int,
    allows: Callable[[str], bool] = lambda token: True,
    min_frequency: int = 2,
    return_segmentation: bool = False,
    weights: Sequence[int] | None = None,
):
    """Learn up to `num_merges` merges over weighted chunks of token ids.

    `id_to_token[i]` is the byte-level string of id i; new tokens get ids len(id_to_token), … and are
    appended to it. Returns the list of merged pairs `(left_id, right_id)` in rank order, and with
    `return_segmentation` also each input chunk's final id sequence (for tests).
    `weights` (non-negative ints, one per chunk; default: the counts) rank the pairs; `min_frequency`
    is always checked against the raw `counts`.
    """
    if len(id_to_token) + num_merges >= (1 << SHIFT):
        raise ValueError(f"vocabulary of {len(id_to_token) + num_merges} exceeds 2**{SHIFT}")
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
    total = int(lengths.sum())
    flat = np.fromiter((t for c in chunks for t in c), dtype=np.int64, count=total)
    weighted = weights is not None
    if weighted and len(weights) != len(chunks):
        raise ValueError(f"weights: {len(weights)} values for {len(chunks)} chunks")
    raw = np.repeat(np.asarray(counts, dtype=np.int64), lengths)  # (total,) chunk count at each position
    weights = np.repeat(np.asarray(weights, dtype=np.int64), lengths) if weighted else raw  # (total,) ranking weight
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(chunks) else np.zeros(0, np.int64)
    ends = starts + lengths - 1
    nxt_np = np.arange(1, total + 1, dtype=np.int64)
    prv_np = np.arange(-1, total - 1, dtype=np.int64)
    nonempty = lengths > 0
    nxt_np[ends[nonempty]] = -1
    prv_np[starts[nonempty]] = -1

    # initial pair statistics, vectorised
    pos0 = np.nonzero(nxt_np >= 0)[0]
    keys0 = (flat[pos0] << SHIFT) | flat[pos0 + 1]
    order = np.argsort(keys0, kind="stable")
    keys_sorted = keys0[order]
    pos_sorted = pos0[order]
    uniq, first = np.unique(keys_sorted, return_index=True)
    def pair_sums(per_position: np.ndarray) -> dict[int, int]:
        sums = np.add.reduceat(per_position[pos_sorted], first) if len(uniq) else np.zeros(0, np.int64)
        return dict(zip(uniq.tolist(), sums.tolist()))

    pair_count = pair_sums(weights)  # ranking: summed weight
    seen = pair_sums(raw) if weighted else pair_count  # raw occurrences, for min_frequency
    heap = [(-c, k) for k, c in pair_count.items() if seen[k] >= min_frequency]
    heapq.heapify(heap)

    sym = array("q", flat.tobytes())
    nxt = array("q", nxt_np.tobytes())
    prv = array("q", prv_np.tobytes())
    wt = array("q", weights.tobytes())
    rw = array("q", raw.tobytes()) if weighted else wt
    extra: dict[int, list[int]] = {}  # positions of pairs created by merges (may be stale)
    banned: set[int] = set()
    merges: list[tuple[int, int]] = []

    while len(merges) < num_merges and heap:
        negc, key = heapq.heappop(heap)
        count = pair_count.get(key, 0)
        if count != -negc:  # stale entry: counts only ever drop without a push
            if seen.get(key, 0) >= min_frequency:
                heapq.heappush(heap, (-count, key))
            continue
        if key in banned or seen.get(key, 0) < min_frequency:  # (zero-weight occurrences may leave the weight as is)
            continue
        a, b = key >> SHIFT, key & MASK
        token = id_to_token[a] + id_to_token[b]
        if not allows(token):
            banned.add(key)
            continue
        new = len(id_to_token)
        id_to_token.append(token)
        merges.append((a, b))

        lo = int(np.searchsorted(keys_sorted, key, "left"))
        hi = int(np.searchsorted(keys_sorted, key, "right"))
        positions = pos_sorted[lo:hi].tolist()
        if key in extra:
            positions = sorted(set(positions).union(extra.pop(key)))
        touched: set[int] = set()
        for p in positions:
            if sym[p] != a:
                continue
            q = nxt[p]
            if q < 0 or sym[q] != b:
                continue
            w, n = wt[p], rw[p]
            r = nxt[q]
            left = prv[p]
            # relink: p takes the new token, q disappears
            sym[p] = new
            sym[q] = -1
            nxt[p] = r
            if r >= 0:
                prv[r] = p
            if left >= 0:
                sl = sym[left]
                k_old = (sl << SHIFT) | a
                pair_count[k_old] -= w
                k_new = (sl << SHIFT) | new
                pair_count[k_new] = pair_count.get(k_new, 0) + w
                if weighted:
                    seen[k_old] -= n
                    seen[k_new] = seen.get(k_new, 0) + n
                extra.setdefault(k_new, []).append(left)
                touched.add(k_new)
            if r >= 0:
                sr = sym[r]
                k_old = (b << SHIFT) | sr
                pair_count[k_old] -= w
                k_new = (new << SHIFT) | sr
                pair_count[k_new] = pair_count.get(k_new, 0) + w
                if weighted:
                    seen[k_old] -= n
                    seen[k_new] = seen.get(k_new, 0) + n
                extra.setdefault(k_new, []).append(p)
                touched.add(k_new)
        pair_count.pop(key, None)
        seen.pop(key, None)
        for k in touched:
            if seen.get(k, 0) >= min_frequency:
                heapq.heappush(heap, (-pair_count[k], k))

    if not return_segmentation:
        return merges
    segs = []
    for s, n in zip(starts.tolist(), lengths.tolist()):
        seq, p = [], s if n else -1
        while p >= 0:
            seq.append(sym[p])
            p = nxt[p]
        segs.append(seq)
    return merges, segs
