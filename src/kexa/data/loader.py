"""Packed fixed-length batches from a weighted mixture of token sources, staged by a curriculum.

Each source (a domain: web, code, math, ko, ...) is a TokenShards stream cut into windows of
seq_len + 1 tokens (window w = tokens [w T, w T + T + 1)); input = window[:-1], labels = window[1:].
Documents are packed back to back with their EOS separators; the label after an EOS (the first
token of an unrelated next document) is masked with -100, so neither the main nor the MTP loss
(which reads labels[:, 1:]) learns to predict across a document boundary.

Mixture and curriculum (K-EXAONE's three stages: foundational knowledge -> domain expertise ->
reasoning): stages declare a fraction of the optimiser steps and per-source weights; for each
sequence slot of a global batch the loader draws a source from the current stage's weights.

Determinism, rank sharding and exact resume: every rank draws the *same* global batch plan
(B x world_size slots) from the same seeded generator and reads only its own slice of slots, so the
loader state is identical on all ranks and a checkpoint from rank 0 resumes every rank. Within a
source, windows are visited in a fresh seeded permutation each epoch (derived from (seed, source,
epoch): not stored), so the state is small: the generator state, one (epoch, position) cursor per
source and the micro-batch counter (`state_dict()` / `load_state_dict()`).

    python -c "from kexa.data.loader import Stage; print(Stage('foundation', 0.6, {'web': 1.0}))"
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .shards import TokenShards

IGNORE = -100


@dataclass
class Stage:
    name: str
    fraction: float  # share of the optimiser steps spent in this stage
    weights: dict[str, float] = field(default_factory=dict)  # source -> sampling weight (normalised)


class Curriculum:
    """Stages laid end to end over `total_steps` optimiser steps (fractions are normalised)."""

    def __init__(self, stages: list[Stage], total_steps: int, sources: list[str]):
        if not stages:
            raise ValueError("a curriculum needs at least one stage")
        errors = []
        for s in stages:
            unknown = sorted(set(s.weights) - set(sources))
            if unknown:
                errors.append(f"stage {s.name!r} weights unknown source(s) {unknown}; sources are {sorted(sources)}")
            if s.fraction <= 0 or any(w < 0 for w in s.weights.values()) or sum(s.weights.values()) <= 0:
                errors.append(f"stage {s.name!r} needs fraction > 0 and non-negative weights with a positive sum")
        if errors:
            raise ValueError("; ".join(errors))
        self.stages, self.sources = stages, list(sources)
        total = sum(s.fraction for s in stages)
        self.ends = np.cumsum([s.fraction / total * total_steps for s in stages])

    def index_at(self, step: int) -> int:
        return min(int(np.searchsorted(self.ends, step, side="right")), len(self.stages) - 1)

    def probs_at(self, step: int) -> np.ndarray:
        w = np.array([self.stages[self.index_at(step)].weights.get(s, 0.0) for s in self.sources], dtype=np.float64)
        return w / w.sum()


class PackedLoader:
    """Yields (input_ids (B, T), labels (B, T)) LongTensors for this rank; B = per-rank batch size."""

    def __init__(self, sources: dict[str, TokenShards], seq_len: int, batch_size: int, curriculum: Curriculum,
                 seed: int = 0, rank: int = 0, world_size: int = 1, micro_per_step: int = 1):
        if not sources:
            raise ValueError("the loader needs at least one token source")
        for name, src in sources.items():
            if src.n_tokens < seq_len + 1:
                raise ValueError(f"source {name!r} has {src.n_tokens} tokens: fewer than one "
                                 f"window of seq_len + 1 = {seq_len + 1}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.sources, self.names = sources, list(sources)
        self.seq_len, self.batch_size, self.curriculum = seq_len, batch_size, curriculum
        self.seed, self.rank, self.world_size, self.micro_per_step = seed, rank, world_size, micro_per_step
        self.n_windows = {n: (s.n_tokens - 1) // seq_len for n, s in sources.items()}
        self.eos = {n: s.eos_id for n, s in sources.items()}
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.cursors = {n: [0, 0] for n in self.names}  # source -> [epoch, position in its permutation]
        self.micro = 0  # micro-batches produced
        self._perm: dict[str, tuple[int, np.ndarray]] = {}

    def _permutation(self, name: str, epoch: int) -> np.ndarray:
        cached = self._perm.get(name)
        if cached is None or cached[0] != epoch:
            gen = np.random.Generator(np.random.PCG64([self.seed, self.names.index(name), epoch]))
            cached = (epoch, gen.permutation(self.n_windows[name]))
            self._perm[name] = cached
        return cached[1]

    def _next_window(self, name: str) -> int:
        epoch, pos = self.cursors[name]
        w = int(self._permutation(name, epoch)[pos])
        self.cursors[name] = [epoch + 1, 0] if pos + 1 == self.n_windows[name] else [epoch, pos + 1]
        return w

    @property
    def stage(self) -> str:
        return self.curriculum.stages[self.curriculum.index_at(self.micro // self.micro_per_step)].name

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.curriculum.probs_at(self.micro // self.micro_per_step)
        picks = self.rng.choice(len(self.names), size=self.batch_size * self.world_size, p=probs)
        rows = []
        lo = self.rank * self.batch_size
        for slot, k in enumerate(picks):  # advance every source cursor on every rank: identical state
            name = self.names[k]
            w = self._next_window(name)
            if lo <= slot < lo + self.batch_size:
                rows.append((name, self.sources[name].window(w * self.seq_len, self.seq_len + 1)))
        self.micro += 1
        return make_batch(rows, self.eos)

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"micro": self.micro, "rng": self.rng.bit_generator.state,
                "cursors": {n: list(c) for n, c in self.cursors.items()},
                "seed": self.seed, "seq_len": self.seq_len, "sources": self.names,
                "global_batch": self.batch_size * self.world_size}

    def load_state_dict(self, state: dict) -> None:
        mine = {"seed": self.seed, "seq_len": self.seq_len, "sources": self.names,
                "global_batch": self.batch_size * self.world_size}
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError("loader state does not match this loader (saved, now): "
                             + ", ".join(f"{k}={a!r} vs {b!r}" for k, (a, b) in diff.items()))
        self.micro = state["micro"]
        self.rng.bit_generator.state = state["rng"]
        self.cursors = {n: list(c) for n, c in state["cursors"].items()}


def make_batch(rows: list[tuple[str, np.ndarray]], eos: dict[str, int | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """rows of (source, window of T + 1 tokens) -> input_ids, labels (B, T) with post-EOS labels masked."""
    windows = torch.from_numpy(np.stack([w for _, w in rows]))  # (B, T + 1)
    inputs, labels = windows[:, :-1].clone(), windows[:, 1:].clone()
    for b, (name, _) in enumerate(rows):
        if eos[name] is not None:
            labels[b][inputs[b] == eos[name]] = IGNORE
    return inputs, labels


def heldout_batches(sources: dict[str, TokenShards], seq_len: int, batch_size: int, max_batches: int,
                    rank: int = 0, world_size: int = 1) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """A fixed evaluation set: the first windows of each held-out source, split across ranks."""
    out = []
    eos = {n: s.eos_id for n, s in sources.items()}
    for name, src in sources.items():
        n = min((src.n_tokens - 1) // seq_len, max_batches * batch_size * world_size)
        mine = list(range(rank, n, world_size))
        for i in range(0, len(mine), batch_size):
            rows = [(name, src.window(w * seq_len, seq_len + 1)) for w in mine[i:i + batch_size]]
            out.append((name, *make_batch(rows, eos)))
    return out
