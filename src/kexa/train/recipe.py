"""TOML training recipes: one dataclass per concern, loaded verbatim, with `--set key=value` overrides.

A recipe file has the sections [model] (a preset plus any ModelConfig field as an override),
[data], [tokenizer], [optim], [schedule], [balance], [train] and an optional list of [[curriculum]] stages
(name, fraction of steps, weights per source). Unknown sections or keys are errors that name the
valid ones, so a typo never silently falls back to a default. `--set optim.lr=1e-3` parses the
value as TOML (numbers, booleans, strings, arrays; bare words become strings).

The recipe is saved inside every checkpoint (recipe.json) and compared on `--resume`
(`resume_mismatches`): only the fields that may legitimately change between the two halves of
one run (total steps, logging/saving cadence) may differ.

    python -c "from kexa.train.recipe import load_recipe; print(load_recipe('configs/tiny.toml').optim)"
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, ModelConfig
from ..data.loader import Stage
from .balance import BalanceConfig
from .optim import OptimConfig
from .schedule import WSD


class RecipeError(ValueError):
    """A recipe file or override that cannot be used, with the reason."""


@dataclass
class DataConfig:
    corpus: str = "builtin"  # "builtin": kexa's own corpus (built and cached) | a `kexa data corpus --out` folder
    tokenizer: str = "train"  # "train": SuperBPE trained on the corpus (cached) | a tokenizer folder
    vocab_size: int = 512  # of the tokenizer trained when tokenizer = "train"
    cache_dir: str = "cache"  # relative paths are resolved against the current directory
    corpus_bytes: int = 4_000_000  # per domain, for the builtin corpus
    domains: list[str] = field(default_factory=list)  # builtin corpus domains (empty: all of kexa.data.DOMAINS)
    seq_len: int = 128
    batch_size: int = 8  # sequences per rank per micro-batch
    grad_accum: int = 1
    eval_batches: int = 4  # held-out batches per source for validation loss and global MaxVio
    weights: dict[str, float] = field(default_factory=dict)  # mixture when no curriculum (empty: uniform)
    # the "tasks" source (kexa.data.task_packs: kexa.tasks train-split dialogues, thinking-augmented
    # pre-training text), sampled only where a curriculum stage or `weights` gives "tasks" a weight
    tasks: list[str] = field(default_factory=list)  # task families (empty: every registered task)
    task_tiers: list[int] = field(default_factory=lambda: [1, 2])
    task_reasoning_ratio: float = 0.5  # share of dialogues in reasoning mode (filled <think>)

    def __post_init__(self) -> None:
        too_small(self, seq_len=1, batch_size=1, grad_accum=1, eval_batches=0, corpus_bytes=1)
        if not 0.0 <= self.task_reasoning_ratio <= 1.0:
            raise ValueError(f"task_reasoning_ratio must be in [0, 1], got {self.task_reasoning_ratio}")


@dataclass
class TokenizerConfig:
    """How `data.tokenizer = "train"` trains SuperBPE (kexa.tokenizer.train_superbpe; docs/tokenizer.md)."""
    transition: float = 0.5  # stage-1 share of the learned tokens (float in (0, 1]) or stage-1 size (int);
    #                          0.5 = kexa.tokenizer.train.DEFAULT_TRANSITION; the report's ~20% superwords = 0.8
    rule: str = "superbpe"  # stage-2 boundary rule: "superbpe" or "kexaone" (K-EXAONE's released pre-tokenizer)
    # which superwords stage 2 learns (kexa.tokenizer.train.balance_plan): the default equalises every corpus
    # domain's gain over plain BPE but code's and stem's; "none" (raw pooled counts: original SuperBPE),
    # "tokens" (each domain's relative token saving alike), "equalize", or {domain = share | "equalize", "*" = …}
    stage2_balance: str | dict = field(default_factory=lambda: {"code": 1.0, "stem": 1.0, "*": "equalize"})

    def __post_init__(self) -> None:
        from ..tokenizer.pretokenize import RULES
        from ..tokenizer.train import check_stage2_balance
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {sorted(RULES)}, got {self.rule!r}")
        check_stage2_balance(self.stage2_balance)
        t = self.transition
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t <= 1 if isinstance(t, float) else t > 384):
            raise ValueError(f"transition must be a fraction in (0, 1] of the learned tokens or a stage-1 vocabulary "
                             f"size > 384, got {t!r}")


@dataclass
class TrainConfig:
    steps: int = 150  # optimiser steps
    seed: int = 0
    dtype: str = "bf16"  # autocast dtype for the forward: "bf16" or "fp32" (weights stay fp32)
    fp8: bool = False  # FP8 GEMMs: Linear layers (torchao float8) and routed experts (model/fp8.py); SM89+ GPU
    threads: int = 0  # torch CPU threads set by the command (0: torch's default; 1 wins on a busy shared CPU)
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda"
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each decoder block (KExaone.compile_blocks); costs a one-time trace
    ep_size: int = 1  # expert-parallel group size under torchrun (1: FSDP2 data parallelism only)
    log_every: int = 1  # progress-bar refresh (metrics.jsonl gets every step)
    eval_every: int = 0  # 0: evaluate only at the end
    save_every: int = 0  # 0: save only at the end and on SIGINT/SIGTERM
    keep_last: int = 2  # checkpoints kept in run_dir/checkpoints
    async_checkpoint: bool = True  # under torchrun: sharded saves written in the background (dcp.async_save)
    max_bad_steps: int = 5  # consecutive non-finite steps before aborting
    plot: bool = True  # PNG of loss and balance curves at the end (needs matplotlib)

    def __post_init__(self) -> None:
        too_small(self, steps=1, threads=0, ep_size=1, log_every=1, eval_every=0, save_every=0, keep_last=1,
                  max_bad_steps=1)


def too_small(config, **minimum: int) -> None:
    """ValueError naming every field below its minimum (a section's __post_init__ check)."""
    bad = [f"{k} must be an integer >= {m}, got {getattr(config, k)!r}" for k, m in minimum.items()
           if not isinstance(getattr(config, k), int) or getattr(config, k) < m]
    if bad:
        raise ValueError("; ".join(bad))


@dataclass
class Recipe:
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: WSD = field(default_factory=WSD)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    curriculum: list[Stage] = field(default_factory=list)

    def model_config(self, vocab_size: int | None = None) -> ModelConfig:
        """The recipe's ModelConfig; `vocab_size` (the tokenizer's) overrides the preset's."""
        kw = dict(self.model)
        preset = kw.pop("preset", "tiny")
        if vocab_size is not None:
            kw["vocab_size"] = vocab_size
        unknown = sorted(set(kw) - {f.name for f in dataclasses.fields(ModelConfig)})
        if unknown:
            raise RecipeError(f"[model] has unknown key(s) {unknown}; valid: 'preset' and ModelConfig fields")
        try:
            return ModelConfig.preset(preset).replace(**kw)
        except ConfigError as e:
            raise RecipeError(f"[model]: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "tokenizer": TokenizerConfig, "optim": OptimConfig, "schedule": WSD, "balance": BalanceConfig, "train": TrainConfig}
# may differ between a run and its resumption without changing the computation already done
RESUMABLE_CHANGES = {"train.steps", "train.threads", "train.compile", "train.log_every", "train.eval_every", "train.save_every", "train.keep_last",
                     "train.async_checkpoint", "train.max_bad_steps", "train.plot", "data.cache_dir", "data.corpus", "data.tokenizer"}


def _section(cls, values: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RecipeError(f"[{where}] has unknown key(s) {unknown}; valid keys: {sorted(names)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"[{where}]: {e}") from e


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    unknown = sorted(set(d) - set(SECTIONS) - {"model", "curriculum"})
    if unknown:
        raise RecipeError(f"unknown recipe section(s) {unknown}; valid: {sorted([*SECTIONS, 'model', 'curriculum'])}")
    kw: dict[str, Any] = {name: _section(cls, d.get(name, {}), name) for name, cls in SECTIONS.items()}
    stages = []
    for i, s in enumerate(d.get("curriculum", [])):
        stages.append(_section(Stage, s, f"curriculum #{i + 1}"))
    model = dict(d.get("model", {}))
    model.setdefault("preset", "tiny")
    recipe = Recipe(model=model, curriculum=stages, **kw)
    cfg = recipe.model_config()  # validate the model section now
    ep = recipe.train.ep_size
    if ep > 1 and ("sparse" not in cfg.mlp_layer_types or cfg.num_experts % ep):
        raise RecipeError(f"train.ep_size = {ep} must divide model.num_experts ({cfg.num_experts}) of a model "
                          f"with MoE layers (expert parallelism splits each layer's experts over ep_size ranks)")
    return recipe


def parse_override(item: str) -> tuple[list[str], Any]:
    """'optim.lr=1e-3' -> (['optim', 'lr'], 0.001)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set expects key=value (e.g. optim.lr=1e-3), got {item!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: a string
    return key.strip().split("."), value


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = d
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return d


def read_toml(path: str | Path, what: str = "recipe file") -> dict[str, Any]:
    """A TOML file as a dict; a missing file or bad TOML is a RecipeError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{what} {p} does not exist")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{p}: invalid TOML: {e}") from e


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a TOML recipe (None: all defaults) and apply `key=value` overrides."""
    d: dict[str, Any] = read_toml(path) if path is not None else {}
    return recipe_from_dict(apply_overrides(d, overrides or []))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "weights":
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


# keys added after recipes were first saved: a checkpoint without one ran with this value
ADDED_KEYS = {"tokenizer.stage2_balance": "none"}


def resume_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Differences between a checkpoint's recipe and the current one that make resuming wrong."""
    a, b = _flatten(saved), _flatten(current)
    for key, value in ADDED_KEYS.items():  # a table value flattens to key.sub-keys: present then too
        if not any(k == key or k.startswith(key + ".") for k in a):
            a[key] = value
    return [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k)]
