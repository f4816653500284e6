"""Training kexa tokenizers: SuperBPE (default) and plain byte-level BPE, both NFC-normalised.

SuperBPE (Liu et al. 2025, arXiv 2503.13423; reference §1):
  1. stage 1 — ordinary BPE with the stock `tokenizers` BpeTrainer (Rust, parallel) on the rule's
     stage-1 pre-tokenization, up to the *transition* vocabulary size t;
  2. stage 2 — the same corpus re-chunked with the looser stage-2 regex; each unique chunk is
     segmented by the stage-1 merges (with `tokenizers` again) and `superword.learn_merges` adds the
     remaining V − t merges exactly, honouring the rule's constraints (≤ 4 words, no ": ").
The result is one plain HF BPE model (all merges by rank; stage-2 merges rank after stage-1 ones, so
rank-order encoding reproduces the curriculum) + NFC + Split(stage-2 regex) + ByteLevel, and a
ByteLevel decoder: any `tokenizers`/`transformers` install encodes exactly as kexa does.

Vocabulary layout: ids 0..127 reserved specials (`specials.py`), then the 256 byte symbols, then
merges. `vocab_size` counts all of them.

    python -c "from kexa.tokenizer import train_superbpe; train_superbpe(['a.txt'], 4096).save_pretrained('tok')"
"""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, normalizers, trainers
from tokenizers import pre_tokenizers

from .pretokenize import BoundaryRule, byte_level_pre_tokenizer, get_rule
from .specials import NUM_RESERVED, reserved_tokens
from .superword import learn_merges
from .textfiles import iter_texts
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

BASE_VOCAB = NUM_RESERVED + 256
DEFAULT_TRANSITION = 0.5  # fraction of the learned (non-reserved, non-byte) tokens made in stage 1 (see docs/tokenizer.md)


def _check_vocab(vocab_size: int) -> None:
    if vocab_size <= BASE_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} must exceed {BASE_VOCAB} (128 reserved + 256 bytes)")


def build_hf_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], regex: str) -> HFTokenizer:
    """Assemble the final artefact: BPE(vocab, merges) + NFC + Split(regex)/ByteLevel + specials."""
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = byte_level_pre_tokenizer(regex)
    tok.decoder = decoders.ByteLevel()
    specials = reserved_tokens()
    tok.add_special_tokens([AddedToken(c, normalized=False) for c, special in specials if special])
    tok.add_tokens([AddedToken(c, normalized=False, special=False) for c, special in specials if not special])
    for i, (content, _) in enumerate(specials):
        assert tok.token_to_id(content) == i, f"special {content!r} landed at {tok.token_to_id(content)}"
    return tok


def _stage1(files, vocab_size: int, regex: str, min_frequency: int, errors: str) -> tuple[dict, list]:
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = byte_level_pre_tokenizer(regex)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[c for c, _ in reserved_tokens()],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter_texts(files, errors), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def count_chunks(files, regex: str, errors: str = "strict") -> Counter:
    """Byte-level stage-2 chunks of the NFC-normalised corpus, with their counts."""
    pt = byte_level_pre_tokenizer(regex)
    counter: Counter = Counter()
    for block in iter_texts(files, errors):
        counter.update(s for s, _ in pt.pre_tokenize_str(unicodedata.normalize("NFC", block)))
    return counter


def segment_chunks(chunks: list[str], vocab: dict[str, int], merges: list, batch: int = 65536) -> list[list[int]]:
    """Apply BPE(vocab, merges) to already byte-level chunks (with `tokenizers`, in parallel)."""
    seg = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    out: list[list[int]] = []
    for i in range(0, len(chunks), batch):
        out += [e.ids for e in seg.encode_batch(chunks[i:i + batch], add_special_tokens=False)]
    return out


def train_bpe(
    files: Iterable[str],
    vocab_size: int,
    rule: str | BoundaryRule = "superbpe",
    min_frequency: int = 2,
    errors: str = "strict",
) -> Tokenizer:
    """Plain byte-level BPE (the baseline): the rule's stage-1 regex for training and encoding."""
    _check_vocab(vocab_size)
    rule, files = get_rule(rule), list(files)
    t0, c0 = time.perf_counter(), time.process_time()
    vocab, merges = _stage1(files, vocab_size, rule.stage1, min_frequency, errors)
    hf = build_hf_tokenizer(vocab, merges, rule.stage1)
    meta = {"algorithm": "bpe", "rule": rule.name, "vocab_size": hf.get_vocab_size(),
            "seconds": {"total": round(time.perf_counter() - t0, 3), "cpu_total": round(time.process_time() - c0, 3)}}
    return Tokenizer(hf, meta=meta)


def train_superbpe(
    files: Iterable[str],
    vocab_size: int,
    transition: int | float = DEFAULT_TRANSITION,
    rule: str | BoundaryRule = "superbpe",
    max_words: int | None = -1,
    min_frequency: int = 2,
    errors: str = "strict",
) -> Tokenizer:
    """SuperBPE: stage-1 BPE up to `transition`, then exact constrained superword merges up to `vocab_size`.

    `transition` is the stage-1 vocabulary size (int), or (float in (0, 1]) the fraction of the
    learned tokens (vocab_size − 384 reserved and byte tokens) that stage 1 learns.
    `rule` is "superbpe" (SuperBPE's stage-2 regex, the default) or "kexaone" (K-EXAONE's released
    pre-tokenizer) or a `BoundaryRule`; `max_words` overrides the rule's word cap (None = no cap).
    """
    _check_vocab(vocab_size)
    rule, files = get_rule(rule), list(files)
    if max_words != -1:
        rule = BoundaryRule(rule.name, rule.stage1, rule.stage2, max_words, rule.forbid_colon_space)
    t = BASE_VOCAB + round(transition * (vocab_size - BASE_VOCAB)) if isinstance(transition, float) else int(transition)
    if not BASE_VOCAB < t <= vocab_size:
        raise ValueError(f"transition={transition} gives {t}, outside ({BASE_VOCAB}, {vocab_size}]")
    t0, c0 = time.perf_counter(), time.process_time()
    vocab, merges = _stage1(files, t, rule.stage1, min_frequency, errors)
    t1 = time.perf_counter()

    counter = count_chunks(files, rule.stage2, errors)
    chunks = [c for c in counter if len(c) > 1]  # one-symbol chunks hold no pair
    segs = segment_chunks(chunks, vocab, merges)
    id_to_token = [None] * len(vocab)
    for token, i in vocab.items():
        id_to_token[i] = token
    keep = [i for i, s in enumerate(segs) if len(s) > 1]
    t2 = time.perf_counter()
    pairs = learn_merges(
        [segs[i] for i in keep], [counter[chunks[i]] for i in keep], id_to_token,
        num_merges=vocab_size - len(vocab), allows=rule.allows, min_frequency=min_frequency,
    )
    t3 = time.perf_counter()
    for a, b in pairs:
        merges.append((id_to_token[a], id_to_token[b]))
        vocab[id_to_token[a] + id_to_token[b]] = len(vocab)
    if len(vocab) < vocab_size:
        log.warning("superbpe: corpus too small: stopped at %d of %d tokens (no pair occurs %d+ times)",
                    len(vocab), vocab_size, min_frequency)
    hf = build_hf_tokenizer(vocab, merges, rule.stage2)
    meta = {
        "algorithm": "superbpe", "rule": rule.name, "vocab_size": hf.get_vocab_size(),
        "transition": t, "stage2_merges": len(pairs), "max_words": rule.max_words,
        "forbid_colon_space": rule.forbid_colon_space, "stage2_chunks": len(keep),
        "seconds": {"stage1": round(t1 - t0, 3), "chunking": round(t2 - t1, 3),
                    "stage2": round(t3 - t2, 3), "total": round(time.perf_counter() - t0, 3),
                    "cpu_total": round(time.process_time() - c0, 3)},
    }
    log.info("superbpe: %s", meta)
    return Tokenizer(hf, meta=meta)
