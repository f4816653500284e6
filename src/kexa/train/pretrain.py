"""`kexa pretrain`: the pre-training stage — a recipe, its data, the shared loop.

    kexa pretrain --config configs/tiny.toml --run-dir runs/tiny            # ~1 min on 2 CPU cores
    kexa pretrain --config configs/nano.toml --run-dir runs/nano --set optim.lr=2e-3
    kexa pretrain --config configs/tiny.toml --run-dir runs/tiny --resume   # after Ctrl-C / SIGTERM
    kexa pretrain ... --resume --steps 300 --allow-schedule-change   # longer run: WSD/curriculum boundaries move
    OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 -m kexa.cli pretrain --config configs/tiny.toml --run-dir runs/dp

RUN_DIR gets metrics.jsonl (one JSON object per optimiser step), checkpoints/step_N/ (HF model
folder + training state), model/ (the final model with its tokenizer files) and training.png.
`pretrain()` is the library entry point; later stages (`kexa extend`) call `loop.train` the same
way with another recipe (mixture, seq_len) and `init_from=` a model folder.

Exit status: 0 done; 130 / 143 after SIGINT / SIGTERM (a checkpoint was saved); 1 for a bad
recipe, an unusable checkpoint or too many non-finite steps (the message says which).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .loop import TrainResult, train
from .prepare import prepare_data
from .recipe import Recipe, RecipeError, load_recipe
from .stage import overrides_of, run_command, stage_parser


def pretrain(recipe: Recipe, run_dir: str | Path, resume: bool = False, quiet: bool = False,
             allow_schedule_change: bool = False) -> TrainResult:
    """Prepare (or reuse) the recipe's corpus, tokenizer and shards, then train in run_dir."""
    from . import dist, parallel
    try:
        parallel.init_distributed(ep_size=recipe.train.ep_size)
    except ValueError as e:  # the launch does not fit the recipe (ep_size vs the number of processes)
        raise RecipeError(f"train.ep_size: {e}") from e
    with dist.main_process_first():  # under torchrun: rank 0 builds the caches, the other ranks reuse them
        data = prepare_data(recipe)
    return train(recipe, run_dir, data, resume=resume, quiet=quiet, allow_schedule_change=allow_schedule_change)


def parser() -> argparse.ArgumentParser:
    p = stage_parser("kexa pretrain", "Pre-train a K-EXAONE model from a TOML recipe.",
                     config="TOML recipe (configs/tiny.toml, configs/nano.toml, ...)",
                     run_dir="output folder: metrics.jsonl, checkpoints/, model/", set_example="optim.lr=1e-3")
    p.add_argument("--allow-schedule-change", action="store_true",
                   help="with --resume and another --steps: accept the moved WSD decay / curriculum boundaries "
                        "(printed old -> new); refused without it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("kexa pretrain", lambda: load_recipe(args.config, overrides_of(args)),
                       lambda recipe: pretrain(recipe, args.run_dir, resume=args.resume, quiet=args.quiet,
                                               allow_schedule_change=args.allow_schedule_change))


if __name__ == "__main__":
    sys.exit(main())
