"""SFT data: conversations rendered with the K-EXAONE chat template and best-fit packed into rows.

    conversation --encode_chat--> ids (L,), assistant mask (L,)           (kexa.tokenizer.chat)
    a buffer of conversations --best-fit decreasing--> bins of <= T + 1 tokens, never split
    a bin --> input_ids = row[:-1], labels = row[1:] (assistant tokens only, never across two
              conversations), document_ids (which conversation each input token belongs to)

The model turns `document_ids` into document masking (no attention across conversations, RoPE
positions restart per conversation: kexa.model.transformer), so a packed row computes exactly what
each conversation alone would. Loss is on assistant tokens only (the `{% generation %}` spans of
the template: reasoning, answer, tool calls, the closing `<|endofturn|>`); the loop normalises it by
the global count of target tokens. MTP reads labels[:, 1:], which are masked at the same boundaries.

Best fit (BFD, as TRL's `packing_strategy="bfd"`): sort a buffer of conversations by length,
longest first, and put each into the open row with the least room that still holds it; a
conversation longer than a row is an error naming where it came from (file:line or task), or is
skipped and counted with `skip_bad`. Padding (id `pad_id`, label -100, its own document id) fills
the rest of a row.

Determinism and exact resume: buffer k is drawn with `random.Random(f"{seed}:{k}")` (tasks sample
from it; which source fills each slot is drawn from the weights), user files are read in a seeded
permutation per epoch; the state is the buffer index, the rows already taken from it and the file
cursors at the buffer's start — `load_state_dict` rebuilds the buffer and continues. Every rank
builds the same buffers and takes its own rows of each global batch.

    python -c "from kexa.data.sft_pack import best_fit; print(best_fit([5, 3, 4, 2, 6], 8))"

Shape legend: B rows, T tokens per row (seq_len).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Any, Protocol

import torch

IGNORE = -100


class ConversationError(ValueError):
    """A conversation that cannot be trained on (too long for a row, no assistant tokens), with its origin."""


@dataclass
class Rendered:
    ids: list[int]  # the rendered conversation's token ids
    mask: list[int]  # 1 on assistant tokens (trained on), else 0
    source: str  # the recipe source it came from
    origin: str  # where exactly: "file.jsonl:12", "task arith (ko, tier 1, reasoning)"
    reasoning: bool  # rendered in reasoning mode (filled <think>) or not (empty think block)


def render(tokenizer, messages: list[dict], tools: list[dict] | None, reasoning: bool, source: str,
           origin: str) -> Rendered:
    """One conversation through the chat template (enable_thinking = reasoning)."""
    enc = tokenizer.encode_chat(messages, tools=tools, enable_thinking=reasoning)
    return Rendered(enc.ids, enc.assistant_mask, source, origin, reasoning)


def check(item: Rendered, capacity: int) -> None:
    """ConversationError unless the conversation fits a row of `capacity` tokens and has a target."""
    if len(item.ids) > capacity:
        raise ConversationError(f"{item.origin}: conversation of {len(item.ids)} tokens does not fit a packed row "
                                f"(data.seq_len + 1 = {capacity} tokens); raise data.seq_len, shorten it, or "
                                f"skip such rows with sft.skip_bad = true")
    if not any(item.mask[1:]):  # the first token is never a label
        raise ConversationError(f"{item.origin}: conversation has no assistant tokens to train on")


def best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices of `lengths` grouped into bins of total <= capacity (each <= capacity).
    Bins come out in creation order; within a bin, items in placement order (longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[tuple[int, int]] = []  # sorted (free space, bin index) of the open bins
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} of length {n} exceeds the bin capacity {capacity}")
        j = bisect.bisect_left(room, (n, -1))  # the tightest bin with room >= n
        if j == len(room):
            bins.append([i])
            free, b = capacity - n, len(bins) - 1
        else:
            free, b = room.pop(j)
            bins[b].append(i)
            free -= n
        if free > 0:
            bisect.insort(room, (free, b))
    return bins


def pack_rows(rows: list[list[Rendered]], seq_len: int, pad_id: int) -> tuple[torch.Tensor, ...]:
    """Rows of whole conversations -> input_ids, labels, document_ids (B, T) LongTensors.

    Row tokens r (T + 1, padded): input_ids = r[:-1]; labels[t] = r[t + 1] when token t + 1 is an
    assistant token of the same conversation as token t, else -100; document_ids[t] = the index of
    token t's conversation in the row (padding: one more index)."""
    B, T = len(rows), seq_len
    tokens = torch.full((B, T + 1), pad_id, dtype=torch.long)
    target = torch.zeros((B, T + 1), dtype=torch.bool)
    docs = torch.empty((B, T + 1), dtype=torch.long)
    for b, row in enumerate(rows):
        at = 0
        for d, item in enumerate(row):
            n = len(item.ids)
            tokens[b, at:at + n] = torch.tensor(item.ids)
            target[b, at:at + n] = torch.tensor(item.mask, dtype=torch.bool)
            docs[b, at:at + n] = d
            at += n
        if at > T + 1:
            raise ValueError(f"row {b} holds {at} tokens: more than seq_len + 1 = {T + 1}")
        docs[b, at:] = len(row)  # padding is a document of its own
    same_doc = docs[:, 1:] == docs[:, :-1]  # (B, T): label t stays inside token t's conversation
    labels = torch.where(target[:, 1:] & same_doc, tokens[:, 1:], torch.full_like(tokens[:, 1:], IGNORE))
    return tokens[:, :-1].contiguous(), labels, docs[:, :-1].contiguous()


# ---------------------------------------------------------------------------- sources
class ConversationSource(Protocol):
    """One recipe source: draws a rendered conversation (from `rng` for tasks, a cursor for files)."""

    name: str

    def draw(self, rng: random.Random) -> Rendered: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class TaskSource:
    """Examples of one `kexa.tasks` task: language, tier and mode drawn per example; `reasoning_ratio`
    of them in reasoning mode (filled <think>), the rest non-reasoning (empty think block)."""

    def __init__(self, name: str, task, tokenizer, langs: list[str], tiers: list[int], reasoning_ratio: float,
                 split: str = "train"):
        self.name, self.task, self.tokenizer = name, task, tokenizer
        self.langs, self.tiers, self.reasoning_ratio, self.split = list(langs), list(tiers), reasoning_ratio, split

    def draw(self, rng: random.Random) -> Rendered:
        lang, tier = rng.choice(self.langs), rng.choice(self.tiers)
        reasoning = rng.random() < self.reasoning_ratio
        ex = self.task.sample(rng, lang=lang, tier=tier, split=self.split)
        mode = "reasoning" if reasoning else "non-reasoning"
        return render(self.tokenizer, ex.conversation(reasoning), ex.tools, reasoning, self.name,
                      f"task {getattr(self.task, 'name', self.name)} ({lang}, tier {tier}, {mode})")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ListSource:
    """Pre-rendered conversations (a user file), read in a fresh seeded permutation each epoch."""

    def __init__(self, name: str, items: list[Rendered], seed: int = 0):
        if not items:
            raise ConversationError(f"source {name!r} has no usable conversations")
        self.name, self.items, self.seed = name, items, seed
        self.cursor = [0, 0]  # [epoch, position in that epoch's permutation]
        self._perm: tuple[int, list[int]] | None = None

    def draw(self, rng: random.Random) -> Rendered:
        epoch, pos = self.cursor
        if self._perm is None or self._perm[0] != epoch:
            order = list(range(len(self.items)))
            random.Random(f"{self.seed}:{self.name}:{epoch}").shuffle(order)
            self._perm = (epoch, order)
        self.cursor = [epoch + 1, 0] if pos + 1 == len(self.items) else [epoch, pos + 1]
        return self.items[self._perm[1][pos]]

    def state_dict(self) -> dict:
        return {"cursor": list(self.cursor), "n": len(self.items)}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != len(self.items):
            raise ValueError(f"source {self.name!r} held {state['n']} conversations when saved, {len(self.items)} now")
        self.cursor = list(state["cursor"])


def render_conversations(tokenizer, rows: list[dict[str, Any]], source: str, capacity: int,
                         skip_bad: bool = False) -> tuple[list[Rendered], int]:
    """Render loaded conversations (`messages`, optional `tools`, optional `origin`) for a ListSource.
    A conversation is in reasoning mode when an assistant turn carries `reasoning_content`. Returns the
    usable ones and the number skipped (skip_bad) — without skip_bad the first bad one raises."""
    out, skipped = [], 0
    for i, row in enumerate(rows):
        origin = row.get("origin") or f"{source}:{i + 1}"
        reasoning = any(m.get("role") == "assistant" and (m.get("reasoning_content") or "").strip()
                        for m in row["messages"])
        try:
            item = render(tokenizer, row["messages"], row.get("tools"), reasoning, source, origin)
            check(item, capacity)
        except ConversationError:
            if not skip_bad:
                raise
            skipped += 1
            continue
        except Exception as e:  # the template rejects it (unknown role, bad content): one line, where
            if not skip_bad:
                raise ConversationError(f"{origin}: cannot render the conversation: {e}") from e
            skipped += 1
            continue
        out.append(item)
    return out, skipped


# ---------------------------------------------------------------------------- the batch source
class PackedConversations:
    """The SFT BatchSource: (input_ids, labels, {"document_ids"}) (B, T) per micro-batch for this rank."""

    stage = "sft"

    def __init__(self, sources: list[ConversationSource], weights: list[float], seq_len: int, batch_size: int,
                 pad_id: int, seed: int = 0, rank: int = 0, world_size: int = 1, buffer: int = 256,
                 skip_bad: bool = False, max_bad: int = 1000):
        if not sources or len(sources) != len(weights) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("the SFT mixture needs sources with non-negative weights and a positive sum")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.sources, self.weights = sources, [w / sum(weights) for w in weights]
        self.seq_len, self.batch_size, self.pad_id, self.seed = seq_len, batch_size, pad_id, seed
        self.rank, self.world_size, self.buffer_size = rank, world_size, max(buffer, batch_size * world_size)
        self.skip_bad, self.max_bad = skip_bad, max_bad
        self.skipped = 0  # conversations drawn but skipped (too long / no target) under skip_bad
        self.buffer_index, self.taken = -1, 0  # the current buffer and the rows already served from it
        self.rows: list[list[Rendered]] = []
        self._at_start: dict = {}  # source states when the current buffer began (for resume)
        self._next_buffer()

    def _draw(self, rng: random.Random) -> Rendered:
        bad = 0
        while True:
            source = self.sources[rng.choices(range(len(self.sources)), self.weights)[0]]
            item = source.draw(rng)
            try:
                check(item, self.seq_len + 1)
                return item
            except ConversationError:
                if not self.skip_bad:
                    raise
                self.skipped, bad = self.skipped + 1, bad + 1
                if bad >= self.max_bad:
                    raise ConversationError(f"{bad} consecutive conversations skipped as bad (last: {item.origin}); "
                                            f"data.seq_len {self.seq_len} is probably too short for these sources")

    def _next_buffer(self) -> None:
        self.buffer_index += 1
        self._at_start = {"sources": [s.state_dict() for s in self.sources], "skipped": self.skipped}
        rng = random.Random(f"{self.seed}:{self.buffer_index}")
        items = [self._draw(rng) for _ in range(self.buffer_size)]
        bins = best_fit([len(it.ids) for it in items], self.seq_len + 1)
        rng.shuffle(bins)  # BFD makes full rows first: mix them so every batch sees the same fill
        self.rows, self.taken = [[items[i] for i in b] for b in bins], 0

    def next_rows(self, n: int) -> list[list[Rendered]]:
        """The next n packed rows of the global stream (crossing into the next buffer when needed)."""
        out: list[list[Rendered]] = []
        while len(out) < n:
            if self.taken == len(self.rows):
                self._next_buffer()
            k = min(n - len(out), len(self.rows) - self.taken)
            out += self.rows[self.taken:self.taken + k]
            self.taken += k
        return out

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        rows = self.next_rows(self.batch_size * self.world_size)  # the global batch; this rank's slice below
        mine = rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        x, y, docs = pack_rows(mine, self.seq_len, self.pad_id)
        return x, y, {"document_ids": docs}

    def state_dict(self) -> dict:
        return {"buffer": self.buffer_index, "taken": self.taken, "at_start": self._at_start,
                "seed": self.seed, "seq_len": self.seq_len, "sources": [s.name for s in self.sources],
                "weights": self.weights, "global_batch": self.batch_size * self.world_size,
                "buffer_size": self.buffer_size}

    def load_state_dict(self, state: dict) -> None:
        mine = {"seed": self.seed, "seq_len": self.seq_len, "sources": [s.name for s in self.sources],
                "weights": self.weights, "global_batch": self.batch_size * self.world_size,
                "buffer_size": self.buffer_size}
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError("SFT data state does not match these sources (saved, now): "
                             + ", ".join(f"{k}={a!r} vs {b!r}" for k, (a, b) in diff.items()))
        for source, s in zip(self.sources, state["at_start"]["sources"]):
            source.load_state_dict(s)
        self.skipped = state["at_start"]["skipped"]
        self.buffer_index = state["buffer"] - 1
        self._next_buffer()  # rebuilds the same buffer from the same starting states
        self.taken = state["taken"]


def fixed_batches(source: PackedConversations, n_batches: int, name: str) -> list[tuple]:
    """n held-out batches (name, input_ids, labels, {"document_ids"}) drawn once from `source`."""
    return [(name, *source.next_batch()) for _ in range(n_batches)]
