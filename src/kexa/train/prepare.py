"""Data preparation for a recipe: corpus -> tokenizer -> token shards, each step cached.

    corpus      data.corpus = "builtin": `kexa.data.build_corpus` (offline multilingual corpus,
                per-domain train/held-out) in CACHE/corpus-<bytes>; or a folder written by
                `kexa data corpus --out DIR` (which also takes the user's own text folders)
    tokenizer   data.tokenizer = "train": SuperBPE (`kexa.tokenizer.train_superbpe`, with the recipe's
                [tokenizer] transition, rule and stage2_balance over the corpus domains) on the corpus's
                train split, cached in CACHE/tokenizer-<hash of corpus key, vocab size, transition, rule,
                balance>; or a folder
    shards      CACHE/shards-<hash of tokenizer.json, corpus key>/<domain>/{train,heldout}: one
                document per corpus .jsonl line, EOS-terminated (kexa.data.shards)
    synthetic   only when the mixture (a curriculum stage or data.weights) weights the source
                "synthetic" (not a corpus domain):
                kexa.data.synthetic retrieval packs (kv / multihop / copy, train-split keys and values,
                fact templates in the recipe's languages, filler from the train shards) at data.seq_len,
                enough for the run's expected share, in CACHE/synthetic-<hash>; a train source only
                (the held-out loss stays natural text). Long-context recipes teach retrieval at the
                short length this way, so context extension only has to generalise it in length.
    tasks       only when the mixture weights the source "tasks": kexa.data.task_packs (the task suite's
                train-split dialogues through the chat template, both modes: the report's thinking-augmented
                pre-training data) at data.seq_len for the run's expected share, in CACHE/tasks-<hash>;
                families data.tasks (empty: all), tiers data.task_tiers, languages those of the corpus
Each cache entry is complete only when its marker file exists (corpus manifest.json, tokenizer.json,
shard meta.json), so an interrupted preparation is redone, never half-used. This is what lets
`configs/tiny.toml` need no preparation: the first run builds everything (tens of seconds), later
runs reuse it.

    python -c "from kexa.train.recipe import load_recipe; from kexa.train.prepare import prepare_data; \
print(prepare_data(load_recipe('configs/tiny.toml')).train)"
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from ..data.loader import Stage
from ..data.shards import META, TokenShards, write_shards
from .loop import TrainData
from .recipe import Recipe, RecipeError

log = logging.getLogger(__name__)


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:12]


SYNTHETIC = "synthetic"  # the curriculum source name of kexa.data.synthetic packs (never a corpus domain)
TASKS = "tasks"  # the curriculum source name of kexa.data.task_packs (never a corpus domain)
GENERATED = (SYNTHETIC, TASKS)


def recipe_domains(recipe: Recipe) -> list[str]:
    """Corpus domains the recipe samples from (curriculum weights, else data.weights, else data.domains)."""
    names: list[str] = []
    for stage in recipe.curriculum:
        names += [n for n, w in stage.weights.items() if w > 0 and n not in names and n not in GENERATED]
    if not names:
        names = [n for n, w in recipe.data.weights.items() if w > 0 and n not in GENERATED]
    return names or list(recipe.data.domains)


def prepare_corpus(recipe: Recipe, cache: Path):
    from ..data.corpus import CorpusInfo, build_corpus
    dc = recipe.data
    if dc.corpus == "builtin":
        domains = recipe_domains(recipe) or None
        return build_corpus(cache / f"corpus-{dc.corpus_bytes}", domains=domains, max_bytes_per_domain=dc.corpus_bytes)
    root = Path(dc.corpus)
    if not (root / "manifest.json").exists():
        raise RecipeError(f"data.corpus = {dc.corpus!r}: not 'builtin' and not a corpus folder with manifest.json "
                          f"(build one with `kexa data corpus --out DIR --input NAME=FOLDER`)")
    return CorpusInfo.load(root)


def prepare_tokenizer(recipe: Recipe, corpus, cache: Path):
    from ..tokenizer import Tokenizer, train_superbpe
    from ..tokenizer.train import check_stage2_balance
    dc = recipe.data
    if dc.tokenizer != "train":
        return Tokenizer.from_pretrained(dc.tokenizer)
    tc = recipe.tokenizer
    balance = tc.stage2_balance
    # "none" hashes as before the setting existed, so those cached tokenizers stay valid
    extra = () if balance == "none" else (json.dumps(balance, sort_keys=True),)
    folder = cache / f"tokenizer-{_short_hash(corpus.manifest.get('key', str(corpus.root)), str(dc.vocab_size), repr(tc.transition), tc.rule, *extra)}"
    if (folder / "tokenizer.json").exists():
        return Tokenizer.from_pretrained(folder)
    log.info("training a %d-token SuperBPE tokenizer (transition %s, rule %s, stage-2 balance %s) on %s",
             dc.vocab_size, tc.transition, tc.rule, tc.stage2_balance, corpus.root)
    # one stage-2 balance group per domain: a corpus folder holds DOMAIN/train.txt
    groups = {Path(f).parent.name: [str(f)] for f in corpus.files("train")}
    try:
        if len(groups) > 1:  # a {domain: share} table must name the corpus's domains
            check_stage2_balance(balance, groups)
    except ValueError as e:
        raise RecipeError(f"[tokenizer] {e}") from e
    tok = train_superbpe(groups, vocab_size=dc.vocab_size, transition=tc.transition, rule=tc.rule,
                         stage2_balance=balance)
    tok.save_pretrained(folder)
    return Tokenizer.from_pretrained(folder)


def _documents(jsonl: Path):
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]


def prepare_shards(corpus, tokenizer, domains: list[str], cache: Path) -> dict[str, dict[str, TokenShards]]:
    """{split: {domain: TokenShards}} for the recipe's domains, tokenised once and cached."""
    tok_json = tokenizer.hf.to_str()
    root = cache / f"shards-{_short_hash(tok_json, corpus.manifest.get('key', str(corpus.root)))}"
    missing = sorted(set(domains) - set(corpus.domains))
    if missing:
        raise RecipeError(f"the recipe samples from {missing}, which the corpus at {corpus.root} does not have; "
                          f"it has {corpus.domains}")
    out: dict[str, dict[str, TokenShards]] = {"train": {}, "heldout": {}}
    for domain in domains:
        for split in out:
            folder = root / domain / split
            if not (folder / META).exists():
                docs = list(_documents(corpus.files(split, "jsonl", [domain])[0]))
                ids = tokenizer.encode_batch(docs) if docs else []
                write_shards(ids, folder, tokenizer.vocab_size, tokenizer.eos_id,
                             extra_meta={"domain": domain, "split": split})
            out[split][domain] = TokenShards(folder)
    return out


def source_share(recipe: Recipe, source: str) -> float:
    """Expected share of the run's sequences drawn from `source` (stage fraction x weight; without a
    curriculum, data.weights is the whole run's mixture)."""
    stages = recipe.curriculum or [Stage("main", 1.0, recipe.data.weights)]
    total = sum(s.fraction for s in stages)
    return sum(s.fraction / total * s.weights.get(source, 0.0) / sum(s.weights.values())
               for s in stages if s.weights)


def synthetic_share(recipe: Recipe) -> float:
    return source_share(recipe, SYNTHETIC)


def _run_tokens(recipe: Recipe, share: float) -> int:
    dc, tc = recipe.data, recipe.train
    return int(tc.steps * dc.batch_size * dc.grad_accum * dc.seq_len * share * 1.1)


def prepare_synthetic(recipe: Recipe, tokenizer, train: dict[str, TokenShards], cache: Path) -> TokenShards:
    """Synthetic retrieval packs at data.seq_len for the whole run (+10%), cached by their inputs."""
    from ..data.synthetic import TEMPLATES, Filler, SyntheticConfig, SyntheticGenerator, write_synthetic_shards
    dc, tc = recipe.data, recipe.train
    # facts in the languages the recipe trains on (the corpus domains en, ko, ... name them)
    config = SyntheticConfig(languages=[n for n in train if n in TEMPLATES] or ["en"])
    n_tokens = _run_tokens(recipe, synthetic_share(recipe))
    key = _short_hash(tokenizer.hf.to_str(), *sorted(train), repr(config), str(dc.seq_len), str(n_tokens), str(tc.seed))
    folder = cache / f"synthetic-{key}"
    if not (folder / META).exists():
        log.info("writing %d synthetic retrieval tokens at seq_len %d to %s", n_tokens, dc.seq_len, folder)
        generator = SyntheticGenerator(tokenizer.encode, Filler.from_shards(list(train.values())), config, split="train")
        write_synthetic_shards(generator, folder, dc.seq_len, n_tokens, tokenizer.vocab_size, tokenizer.eos_id,
                               seed=tc.seed)
    return TokenShards(folder)


def prepare_tasks(recipe: Recipe, tokenizer, langs: list[str], cache: Path) -> TokenShards:
    """Task-suite dialogues at data.seq_len for the run's expected share (+10%), cached by their inputs."""
    import kexa.tasks
    from ..data.task_packs import write_task_shards
    dc, tc = recipe.data, recipe.train
    try:
        tasks = [kexa.tasks.get(n) for n in (dc.tasks or kexa.tasks.names())]
    except KeyError as e:
        raise RecipeError(f"data.tasks: {e.args[0]}") from None
    unknown = sorted(set(dc.task_tiers) - {tier for t in tasks for tier in t.tiers})
    if unknown or not dc.task_tiers:
        raise RecipeError(f"data.task_tiers {dc.task_tiers}: tier(s) {unknown or 'none'} not offered by the tasks "
                          f"{[t.name for t in tasks]} (they have tiers {sorted({x for t in tasks for x in t.tiers})})")
    langs = [lg for lg in langs if lg in kexa.tasks.LANGS] or list(kexa.tasks.LANGS)
    n_tokens = _run_tokens(recipe, source_share(recipe, TASKS))
    key = _short_hash(tokenizer.hf.to_str(), *[t.name for t in tasks], *langs, repr(dc.task_tiers),
                      repr(dc.task_reasoning_ratio), str(dc.seq_len), str(n_tokens), str(tc.seed))
    folder = cache / f"tasks-{key}"
    if not (folder / META).exists():
        log.info("writing %d task-dialogue tokens at seq_len %d to %s", n_tokens, dc.seq_len, folder)
        try:
            write_task_shards(tokenizer, tasks, folder, dc.seq_len, n_tokens, langs, dc.task_tiers,
                              dc.task_reasoning_ratio, seed=tc.seed)
        except ValueError as e:
            raise RecipeError(f"data.tasks: {e}") from None
    return TokenShards(folder)


def prepare_data(recipe: Recipe) -> TrainData:
    cache = Path(recipe.data.cache_dir)
    corpus = prepare_corpus(recipe, cache)
    tokenizer = prepare_tokenizer(recipe, corpus, cache)
    domains = recipe_domains(recipe) or corpus.domains
    shards = prepare_shards(corpus, tokenizer, domains, cache)
    train = dict(shards["train"])
    if synthetic_share(recipe) > 0:
        train[SYNTHETIC] = prepare_synthetic(recipe, tokenizer, shards["train"], cache)
    if source_share(recipe, TASKS) > 0:
        train[TASKS] = prepare_tasks(recipe, tokenizer, list(shards["train"]), cache)
    return TrainData(train=train, heldout=shards["heldout"], tokenizer=tokenizer, vocab_size=tokenizer.vocab_size)
