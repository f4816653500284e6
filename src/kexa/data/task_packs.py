"""`kexa.tasks` dialogues as pre-training text: the report's thinking-augmented data, at toy scale.

K-EXAONE's reasoning stage of pre-training carries data with reasoning traces (report §3.1) so the
base model already knows the shape of a worked answer before SFT. Here that data is the task suite's
train split rendered through the chat template — half in reasoning mode (the programmatic trace in
`<think>`), half with the empty think block — as a pre-training source named "tasks" that a
curriculum stage weights like a corpus domain:

    [data]
    tasks = ["arith", "lookup"]   # families (empty: every registered task), tiers `task_tiers`
    [[curriculum]]
    weights = { en = 1.0, ..., tasks = 4.0 }

Layout: packs of exactly seq_len tokens, aligned with the loader's windows (window w = tokens
[w T, w T + T + 1)), each holding whole dialogues (EOS after each; first-fit decreasing, as the
long-document packs of context extension), the rest of the pack EOS padding, so no window starts or
ends inside a dialogue. Loss is on every token as for any
pre-training text (the prompt too); the label after an EOS is masked by the loader, so padding
teaches nothing. A dialogue longer than a pack is skipped (and counted). Held-out problems are never
drawn (split="train"), so evaluating SFT/RL on the held-out split stays clean.

    python -c "import kexa.tasks, kexa.tokenizer as t; from kexa.data.task_packs import write_task_shards; \
write_task_shards(t.Tokenizer.from_pretrained('cache/TOKENIZER'), [kexa.tasks.get('arith')], '/tmp/tp', 256, 10000, ['en'], [1])"
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .longdoc import pack_documents
from .shards import write_shards
from .sft_pack import TaskSource


def task_dialogues(tokenizer, tasks: list, langs: list[str], tiers: list[int], reasoning_ratio: float,
                   seed: int) -> Iterator[list[int]]:
    """Rendered train-split dialogues, endlessly: task, language, tier and mode drawn per dialogue."""
    rng = random.Random(f"task-packs:{seed}")
    sources = [TaskSource(t.name, t, tokenizer, [lg for lg in langs if lg in t.langs] or list(t.langs),
                          [tr for tr in tiers if tr in t.tiers] or [t.tiers[0]], reasoning_ratio) for t in tasks]
    while True:
        src = rng.choice(sources)
        item = src.draw(rng)
        yield item.ids


def write_task_shards(tokenizer, tasks: list, out_dir: str | Path, seq_len: int, n_tokens: int,
                      langs: list[str], tiers: list[int], reasoning_ratio: float = 0.5, seed: int = 0) -> dict:
    """At least n_tokens of task dialogues packed whole into seq_len-token sequences (first-fit
    decreasing, EOS padding: `kexa.data.longdoc.pack_documents`) as a shard set, in a seeded order;
    the meta records how many dialogues were drawn and how many were too long for a pack."""
    if not tasks:
        raise ValueError("write_task_shards needs at least one task")
    eos = tokenizer.eos_id
    kept: list[np.ndarray] = []
    size, too_long = 0, 0
    for ids in task_dialogues(tokenizer, tasks, langs, tiers, reasoning_ratio, seed):
        if len(ids) + 1 > seq_len:
            too_long += 1
            if too_long > 1000 and not kept:
                raise ValueError(f"no task dialogue fits a {seq_len}-token pack (raise data.seq_len or pick "
                                 f"shorter tasks/tiers)")
            continue
        kept.append(np.asarray(ids, dtype=np.int64))
        size += len(ids) + 1
        if size >= n_tokens * 1.03:  # first-fit decreasing leaves ~1-3% padding
            break
    seqs = pack_documents(kept, seq_len, eos)
    random.Random(f"task-packs-order:{seed}").shuffle(seqs)
    padding = seq_len * len(seqs) - sum(k.size + 1 for k in kept)
    return write_shards((s[:-1] for s in seqs), out_dir, tokenizer.vocab_size, eos,
                        extra_meta={"kind": "tasks", "seq_len": seq_len, "seed": seed, "tasks": [t.name for t in tasks],
                                    "tiers": list(tiers), "langs": list(langs), "reasoning_ratio": reasoning_ratio,
                                    "dialogues": len(kept), "too_long": too_long, "padding_tokens": padding})
