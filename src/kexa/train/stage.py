"""What every training stage command shares around `kexa.train.recipe` and `loop.train`.

A stage recipe (`kexa sft`, `kexa rl`, `kexa preference`) is the pre-training recipe plus the stage's own
sections: `read_stage` reads the TOML and applies `--set` overrides, the stage pops its sections and hands the
rest to `recipe_from_dict`. `[[source]]` is one table for all stages (`SourceConfig`, `read_sources`); the
router-freezing stages force `[balance] freeze_router` with `freeze_router`. The command side: one parser
(`stage_parser`), one error policy (`run_command`: one line naming the problem, exit 1; 130 / 143 after
SIGINT / SIGTERM), one resume check of the stage's saved recipe (`check_resume`), one start (`check_model_folder`,
`refuse_checkpoints`, `init_model`).

    from kexa.train.stage import read_stage, read_sources
    d = read_stage("configs/sft_tiny.toml", ["sft.reasoning_ratio=0.3"])
    sources = read_sources(d, "an SFT", "task = '<name>' or file = '<path>'")
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..data.shards import ShardError
from ..model.hf import CheckpointError
from .loop import NonFiniteError, TrainData, TrainResult, build_model
from .recipe import Recipe, RecipeError, _section, apply_overrides, read_toml

LANGS = ("ko", "en", "es", "de", "ja", "vi")
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
# what any stage command turns into one line and exit 1; a stage adds its own (judge, data file, ...)
STAGE_ERRORS = (RecipeError, CheckpointError, ShardError, NonFiniteError, FileNotFoundError)


# ---------------------------------------------------------------------------- the recipe
@dataclass
class SourceConfig:
    """One [[source]] of a stage's mixture: a kexa.tasks task or a data file (which files a stage reads is its own)."""
    name: str  # sft / rl: the mixture's label; preference: the domain its prompts belong to
    weight: float = 1.0
    task: str = ""  # a kexa.tasks name ...
    file: str = ""  # ... or a data file (sft: conversations JSONL / parquet; preference: prompts, "builtin:<domain>")
    langs: list[str] = field(default_factory=lambda: list(LANGS))  # task sources
    tiers: list[int] = field(default_factory=lambda: [1])  # task sources

    def __post_init__(self) -> None:
        if bool(self.task) == bool(self.file):
            raise ValueError(f"source {self.name!r} needs exactly one of task = '<name>' or file = '<path>'")
        if not self.weight >= 0:
            raise ValueError(f"source {self.name!r}: weight must be >= 0, got {self.weight!r}")
        unknown = sorted(set(self.langs) - set(LANGS))
        if unknown or not self.langs or not self.tiers:
            raise ValueError(f"source {self.name!r}: langs must be a non-empty subset of {list(LANGS)} "
                             f"(unknown: {unknown}) and tiers non-empty")


def read_stage(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """A stage recipe file (None: empty) as a dict with `key=value` overrides applied; the stage pops its sections."""
    return apply_overrides(read_toml(path) if path is not None else {}, overrides or [])


def read_sources(d: dict[str, Any], stage: str, kinds: str) -> list[SourceConfig]:
    """Pop and check the [[source]] list: at least one, unique names, weights with a positive sum."""
    raw = d.pop("source", [])
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"{stage} recipe needs at least one [[source]] ({kinds})")
    sources = [_section(SourceConfig, s, f"source #{i + 1}") for i, s in enumerate(raw)]
    names = [s.name for s in sources]
    if len(set(names)) != len(names) or sum(s.weight for s in sources) <= 0:
        raise RecipeError(f"[[source]] names must be unique and their weights must have a positive sum; got {names}")
    return sources


def freeze_router(d: dict[str, Any], why: str) -> None:
    """Force [balance] freeze_router = true (RL and preference train with the router frozen); any other value is
    a RecipeError saying `why`."""
    balance = d.setdefault("balance", {})
    if balance.get("freeze_router", True) is not True:
        raise RecipeError(f"[balance] freeze_router = {balance['freeze_router']!r}: {why}")
    balance["freeze_router"] = True


def resolve_task(name: str):
    """The kexa.tasks task called `name` (RecipeError listing the known ones otherwise)."""
    try:
        import kexa.tasks
    except ImportError as e:
        raise RecipeError(f"[[source]] task = {name!r} needs the kexa.tasks package ({e})") from None
    try:
        return kexa.tasks.get(name)
    except KeyError as e:
        raise RecipeError(f"[[source]] task: {e.args[0]}") from None


def check_resume(run_dir: Path, saved_name: str, now: dict[str, Any], stage: str, eval_keys: set[str]) -> None:
    """A resumed run's stage sections (`now`, the stage recipe's to_dict()) must equal those saved in
    run_dir/saved_name when it started, except [recipe] (the loop compares that itself) and the stage
    section's evaluation keys."""
    saved_path = run_dir / saved_name
    if not saved_path.exists():
        return
    saved, now = json.loads(saved_path.read_text()), json.loads(json.dumps(now))
    for d in (saved, now):
        d.pop("recipe")
        for k in eval_keys:
            d[stage].pop(k, None)
    diff = [k for k in now if saved.get(k) != now.get(k)]
    if diff:
        raise RecipeError(f"cannot resume {run_dir}: the recipe's {', '.join(f'[{k}]' for k in diff)} differ from "
                          f"the run's {saved_name} (use a new --run-dir, or the original recipe)")


# ---------------------------------------------------------------------------- the start
def check_model_folder(path: str | Path) -> Path:
    p = Path(path)
    for name in ("config.json", "tokenizer.json"):
        if not (p / name).is_file():
            raise CheckpointError(f"--init-from {p}: not a model folder with its tokenizer ({name} is missing); "
                                  f"use a pre-training run's model/ (kexa pretrain ... --run-dir RUN -> RUN/model)")
    return p


def refuse_checkpoints(run_dir: Path) -> None:
    """A fresh (not --resume) run must not write over another run's checkpoints."""
    from . import checkpoint as ckpt
    if ckpt.list_checkpoints(run_dir):
        raise CheckpointError(f"{run_dir} already holds checkpoints: pass --resume to continue, or use a new --run-dir")


def init_model(recipe: Recipe, folder: Path, tokenizer):
    """The model in `folder` as the loop builds it (dtype, compile, ...); its tokenizer must fit its embeddings."""
    model = build_model(recipe, TrainData({}), folder)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"--init-from {folder}: its tokenizer has {tokenizer.vocab_size} tokens, the model "
                              f"only {model.config.vocab_size} embeddings")
    return model


# ---------------------------------------------------------------------------- the command
def stage_parser(prog: str, description: str, config: str, run_dir: str, set_example: str,
                 init_from: str | None = None) -> argparse.ArgumentParser:
    """The arguments every stage command takes (init_from: the --init-from help; None: no --init-from)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", required=True, help=config)
    if init_from is not None:
        p.add_argument("--init-from", required=True, help=init_from)
    p.add_argument("--run-dir", required=True, help=run_dir)
    p.add_argument("--steps", type=int, help="optimiser steps (overrides train.steps)")
    p.add_argument("--resume", action="store_true", help="continue from the latest valid checkpoint in --run-dir")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a recipe value, e.g. --set {set_example} (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def overrides_of(args: argparse.Namespace) -> list[str]:
    """--set items, then --steps as train.steps."""
    return list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps is not None else [])


def run_command(prog: str, load: Callable[[], Any], run: Callable[[Any], TrainResult], errors: tuple = ()) -> int:
    """load() the recipe (a Recipe or a stage recipe holding one as .recipe), apply train.threads, run(it);
    a STAGE_ERRORS or `errors` exception is one line on stderr and exit 1; 130 / 143 after SIGINT / SIGTERM."""
    try:
        loaded = load()
        recipe = loaded if isinstance(loaded, Recipe) else loaded.recipe
        if recipe.train.threads:  # a process-wide setting: applied here, in the command, not in the library
            torch.set_num_threads(recipe.train.threads)
        result = run(loaded)
    except (*STAGE_ERRORS, *errors) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return EXIT_CODES.get(result.interrupted, 0) if result.interrupted else 0
