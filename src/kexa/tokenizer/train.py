"""Training kexa tokenizers: SuperBPE (default) and plain byte-level BPE, both NFC-normalised.

SuperBPE (Liu et al. 2025, arXiv 2503.13423; reference §1):
  1. stage 1 — ordinary BPE with the stock `tokenizers` BpeTrainer (Rust, parallel) on the rule's
     stage-1 pre-tokenization, up to the *transition* vocabulary size t;
  2. stage 2 — the same corpus re-chunked with the looser stage-2 regex; each unique chunk is
     segmented by the stage-1 merges (with `tokenizers` again) and `superword.learn_merges` adds the
     remaining V − t merges exactly, honouring the rule's constraints (≤ 4 words, no ": ").
Language-balanced stage 2 (`stage2_balance`; docs/tokenizer.md): given the training text as groups
(one per language/domain), stage 2 ranks a pair not by its raw count over the pooled corpus — which
hands most superwords to the group with the most frequent multi-word pairs per byte (English, and
generated text) — but by the *relative* token saving in each group: a chunk's count in group g is
weighted by share_g / (g's stage-1 token count), so the greedy step maximises the share-weighted sum
of the per-group savings ("tokens": all shares 1). "equalize" sets the shares of the chosen groups by
multiplicative weights so that their gains over plain BPE of the same size (measured on the training
text, each round a full stage 2) come out equal: the max-min allocation of the stage-2 merges. The
default equalises every group but `code` and `stem`. Stage 1 and the encoding are unchanged.

The result is one plain HF BPE model (all merges by rank; stage-2 merges rank after stage-1 ones, so
rank-order encoding reproduces the curriculum) + NFC + Split(stage-2 regex) + ByteLevel, and a
ByteLevel decoder: any `tokenizers`/`transformers` install encodes exactly as kexa does.

Vocabulary layout: ids 0..127 reserved specials (`specials.py`), then the 256 byte symbols, then
merges. `vocab_size` counts all of them.

    python -c "from kexa.tokenizer import train_superbpe; train_superbpe(['a.txt'], 4096).save_pretrained('tok')"
"""

from __future__ import annotations

import json
import itertools
import logging
import math
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping

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
EQUALIZE = "equalize"
# languages' gains over plain BPE equalised; code and generated STEM text weighted by their relative saving
DEFAULT_STAGE2_BALANCE = {"code": 1.0, "stem": 1.0, "*": EQUALIZE}
EQUALIZE_ROUNDS = 3  # stage-2 runs (the first with equal shares); measured to settle by the second
EQUALIZE_STEP = 6.0  # log-share change per unit of gain below the mean (~half the measured response)
WEIGHT_RESOLUTION = 10_000  # the lightest group's weight per occurrence: integer weights within 1e-4


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


def balance_plan(balance, groups: Iterable[str] | None = None) -> tuple[dict[str, float], set[str]] | None:
    """Validate `stage2_balance` and resolve it per group: None for raw pooled counts, else
    ({group: starting share}, {groups whose shares are equalised}). With `groups` None only the form
    is checked (a recipe, before the corpus is known).

    Forms: None / "none"; "tokens" (share 1 each); "equalize" (all groups equalised); {group: share
    >= 0 or "equalize"} naming exactly the groups, or with a "*" entry for every group not named
    (then named groups the text lacks are ignored).
    """
    if balance is None or balance == "none":
        return None
    if balance in ("tokens", "equalize"):
        balance = {"*": 1.0 if balance == "tokens" else EQUALIZE}
    if not isinstance(balance, Mapping):
        raise ValueError(f"stage2_balance={balance!r}: use \"none\", \"tokens\", \"equalize\" or {{group: share or "
                         f"\"equalize\"}}")
    bad = {g: v for g, v in balance.items() if v != EQUALIZE and (
        isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"))}
    if bad or not any(v == EQUALIZE or v > 0 for v in balance.values()):
        raise ValueError(f"stage2_balance values must be finite shares >= 0 or \"equalize\", not all 0, got {dict(balance)}")
    if groups is None:
        return {}, set()
    groups = list(groups)
    if "*" not in balance and set(balance) != set(groups):
        raise ValueError(f"stage2_balance names groups {sorted(balance)} but the training text has {sorted(groups)}")
    value = {g: balance.get(g, balance.get("*")) for g in groups}
    if not any(v == EQUALIZE or v > 0 for v in value.values()):
        raise ValueError(f"stage2_balance gives every group of the training text a zero share: {value}")
    return {g: 1.0 if v == EQUALIZE else float(v) for g, v in value.items()}, {g for g, v in value.items() if v == EQUALIZE}


def check_stage2_balance(balance, groups: Iterable[str] | None = None) -> None:
    """Raise one-line ValueError if `balance` is not a valid `stage2_balance` (for these groups)."""
    balance_plan(balance, groups)


def group_files(files) -> dict[str, list[str]]:
    """{group name: files}: a mapping as given, a plain list as one group per file (named by its path)."""
    if isinstance(files, Mapping):
        groups = {str(g): [str(f) for f in fs] for g, fs in files.items()}
    else:
        groups = {str(f): [str(f)] for f in files}
    empty = [g for g, fs in groups.items() if not fs]
    if not groups or empty:
        raise ValueError(f"no training files{' for group(s) ' + ', '.join(empty) if empty else ''}")
    return groups


def stage2_weights(
    group_counts: dict[str, Counter], chunks: list[str], chunk_tokens: list[int], balance: Mapping[str, float],
) -> tuple[list[int], dict[str, float]]:
    """Integer ranking weight of each chunk, and each group's relative weight per occurrence.

    `balance` is {group: share}.
    `group_counts[g][c]` is chunk c's count in group g; `chunk_tokens[i]` is chunks[i]'s stage-1 length.
    Group g's weight per occurrence is share_g / T_g with T_g its stage-1 token count (all its chunks,
    one-symbol ones too), so a merge scores sum_g share_g * (occurrences saved in g) / T_g; scaled so
    the lightest non-zero group weighs WEIGHT_RESOLUTION per occurrence and rounded per chunk.
    """
    length = dict(zip(chunks, chunk_tokens))
    tokens = {g: sum(n * length.get(c, 1) for c, n in cnt.items()) for g, cnt in group_counts.items()}
    share = {g: float(balance[g]) for g in group_counts}
    per_occurrence = {g: share[g] / tokens[g] if tokens[g] else 0.0 for g in group_counts}
    if not any(per_occurrence.values()):
        raise ValueError(f"stage2_balance: every group with a share > 0 is empty ({share})")
    lightest = min(w for w in per_occurrence.values() if w > 0)
    scale = {g: WEIGHT_RESOLUTION * w / lightest for g, w in per_occurrence.items()}
    weight: dict[str, float] = dict.fromkeys(chunks, 0.0)
    for g, cnt in group_counts.items():
        for c, n in cnt.items():
            if c in weight:
                weight[c] += scale[g] * n
    weights = [round(weight[c]) for c in chunks]
    if sum(weights) >= 1 << 62:
        raise ValueError(f"stage2_balance: group weights {per_occurrence} span too wide a range for int64 counts")
    return weights, {g: round(w / WEIGHT_RESOLUTION, 4) for g, w in scale.items()}


def plain_bpe_tokens(groups: dict[str, list[str]], vocab: dict[str, int], merges: list, rule: BoundaryRule,
                     errors: str) -> dict[str, int]:
    """Each group's token count on its training text under plain BPE (vocab, merges): `train_bpe`'s artefact."""
    bpe = build_hf_tokenizer(vocab, merges, rule.stage1)
    return {g: sum(len(e.ids) for e in bpe.encode_batch(list(iter_texts(fs, errors)), add_special_tokens=False))
            for g, fs in groups.items()}


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
    files: Iterable[str] | Mapping[str, Iterable[str]],
    vocab_size: int,
    transition: int | float = DEFAULT_TRANSITION,
    rule: str | BoundaryRule = "superbpe",
    max_words: int | None = -1,
    min_frequency: int = 2,
    errors: str = "strict",
    stage2_balance: str | Mapping[str, float] | None = DEFAULT_STAGE2_BALANCE,
) -> Tokenizer:
    """SuperBPE: stage-1 BPE up to `transition`, then exact constrained superword merges up to `vocab_size`.

    `transition` is the stage-1 vocabulary size (int), or (float in (0, 1]) the fraction of the
    learned tokens (vocab_size − 384 reserved and byte tokens) that stage 1 learns.
    `rule` is "superbpe" (SuperBPE's stage-2 regex, the default) or "kexaone" (K-EXAONE's released
    pre-tokenizer) or a `BoundaryRule`; `max_words` overrides the rule's word cap (None = no cap).
    `files` is a list (each file one group) or {group: files} (e.g. one group per language).
    `stage2_balance` (see `balance_plan`; ignored with one group): which superwords stage 2 learns —
    None/"none" (raw pooled counts: the original SuperBPE), "tokens" (each group's relative token
    saving alike), "equalize" or {group: share or "equalize"}. The default equalises the gain over
    plain BPE of every group but code and stem (docs/tokenizer.md).
    """
    _check_vocab(vocab_size)
    groups = group_files(files)
    plan = balance_plan(stage2_balance, groups) if len(groups) > 1 else None
    rule, files = get_rule(rule), [f for fs in groups.values() for f in fs]
    if max_words != -1:
        rule = BoundaryRule(rule.name, rule.stage1, rule.stage2, max_words, rule.forbid_colon_space)
    t = BASE_VOCAB + round(transition * (vocab_size - BASE_VOCAB)) if isinstance(transition, float) else int(transition)
    if not BASE_VOCAB < t <= vocab_size:
        raise ValueError(f"transition={transition} gives {t}, outside ({BASE_VOCAB}, {vocab_size}]")
    t0, c0 = time.perf_counter(), time.process_time()
    baseline = None
    if plan is not None and plan[1]:  # equalising measures each group's tokens under plain BPE of the final size,
        full_vocab, full_merges = _stage1(files, vocab_size, rule.stage1, min_frequency, errors)
        baseline = plain_bpe_tokens(groups, full_vocab, full_merges, rule, errors)
        # whose first merges *are* stage 1 (BPE is greedy: training stops at t or runs on; the tests compare)
        vocab = {token: i for token, i in full_vocab.items() if i < t}
        merges = list(itertools.takewhile(lambda m: full_vocab[m[0] + m[1]] < t, full_merges))
    else:
        vocab, merges = _stage1(files, t, rule.stage1, min_frequency, errors)
    stage1_vocab = len(vocab)  # < t: the corpus ran out of pairs seen min_frequency times before the transition
    t1 = time.perf_counter()

    group_counts = {g: count_chunks(fs, rule.stage2, errors) for g, fs in groups.items()}
    counter = sum(group_counts.values(), Counter()) if len(groups) > 1 else next(iter(group_counts.values()))
    chunks = [c for c in counter if len(c) > 1]  # one-symbol chunks hold no pair
    segs = segment_chunks(chunks, vocab, merges)
    id_to_token = [None] * len(vocab)
    for token, i in vocab.items():
        id_to_token[i] = token
    keep = [i for i, s in enumerate(segs) if len(s) > 1]
    t2 = time.perf_counter()

    def stage2(weights=None):
        ids = list(id_to_token)  # learn_merges appends the new tokens
        out = learn_merges(
            [segs[i] for i in keep], [counter[chunks[i]] for i in keep], ids, num_merges=vocab_size - len(vocab),
            allows=rule.allows, min_frequency=min_frequency, weights=weights, return_segmentation=baseline is not None)
        return (*out, ids) if baseline is not None else (out, None, ids)

    balance_meta: dict = {}
    if plan is None:
        pairs, _, ids = stage2()
    else:
        shares, equalized = plan
        lengths = [len(s) for s in segs]
        best = None
        for round_ in range(EQUALIZE_ROUNDS if equalized else 1):
            weights, per_occurrence = stage2_weights(group_counts, chunks, lengths, shares)
            pairs, final, ids = stage2([weights[i] for i in keep])
            gain = None
            if baseline is not None:  # each group's gain over plain BPE on the training text
                final_len = dict(zip(chunks, lengths)) | {chunks[i]: len(f) for i, f in zip(keep, final)}
                gain = {g: round(baseline[g] / sum(n * final_len.get(c, 1) for c, n in cnt.items()) - 1, 4)
                        for g, cnt in group_counts.items()}
            worst = min(gain[g] for g in equalized) if gain else 0.0
            log.info("superbpe stage 2, round %d: shares %s, training-text gain over plain BPE %s", round_, shares, gain)
            if best is None or worst > best[0]:
                best = (worst, pairs, ids, {"stage2_shares": {g: round(v, 4) for g, v in shares.items()},
                                            "stage2_group_weights": per_occurrence, "stage2_train_gain": gain})
            if gain:  # multiplicative weights towards equal gains of the equalised groups
                mean = sum(gain[g] for g in equalized) / len(equalized)
                shares = {g: v * math.exp(EQUALIZE_STEP * (mean - gain[g])) if g in equalized else v
                          for g, v in shares.items()}
        _, pairs, ids, balance_meta = best
        balance_meta["stage2_rounds"] = round_ + 1
    t3 = time.perf_counter()
    for a, b in pairs:
        merges.append((ids[a], ids[b]))
        vocab[ids[a] + ids[b]] = len(vocab)
    if len(vocab) < vocab_size:
        log.warning("superbpe: corpus too small: stopped at %d of %d tokens (no pair occurs %d+ times)",
                    len(vocab), vocab_size, min_frequency)
    hf = build_hf_tokenizer(vocab, merges, rule.stage2)
    meta = {
        "algorithm": "superbpe", "rule": rule.name, "vocab_size": hf.get_vocab_size(),
        "transition": t, "stage1_vocab": stage1_vocab, "stage2_merges": len(pairs), "max_words": rule.max_words,
        "forbid_colon_space": rule.forbid_colon_space, "stage2_chunks": len(keep),
        "stage2_balance": None if plan is None else stage2_balance if isinstance(stage2_balance, str)
        else dict(stage2_balance), **balance_meta,
        "seconds": {"stage1": round(t1 - t0, 3), "chunking": round(t2 - t1, 3),
                    "stage2": round(t3 - t2, 3), "total": round(time.perf_counter() - t0, 3),
                    "cpu_total": round(time.process_time() - c0, 3)},
    }
    log.info("superbpe: %s", meta)
    return Tokenizer(hf, meta=meta)
