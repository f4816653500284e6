"""`kexa sft`: supervised fine-tuning on chat data — reasoning on and off — on the shared loop.

    kexa sft --config configs/sft_tiny.toml --init-from runs/tiny/model --run-dir runs/tiny-sft
    kexa sft --config configs/sft_nano.toml --init-from runs/nano/model --run-dir runs/nano-sft --set sft.reasoning_ratio=0.3
    kexa sft ... --resume                                   # after Ctrl-C / SIGTERM: bitwise the same run

The recipe is a pre-training recipe ([data] seq_len / batch_size / grad_accum, [optim], [schedule],
[balance], [train]) plus
    [sft]        reasoning_ratio (share of task examples with a filled <think>; the rest get the
                 empty think block of enable_thinking=False), epochs (over user files; sets train.steps),
                 skip_bad, pack buffer, evaluation settings
    [[source]]   name, weight, and either task = "<kexa.tasks name>" (langs, tiers) or
                 file = "<JSONL/parquet in TRL conventions>" (kexa.data.conversations)
    [lora]       optional: rank, alpha, targets, dropout (kexa.train.lora; merged into the export)
Data: conversations rendered with the K-EXAONE chat template, best-fit packed whole into rows with
document masking, loss on assistant tokens only (kexa.data.sft_pack) — a BatchSource for
`loop.train`, whose default loss (CE + MTP + balance, per target token) is SFT's. MoE: the bias
update and a small balance loss stay on by default ([balance] gamma, alpha; freeze_router to stop both).

Evaluation (train.eval_every and the last step, and once before training): held-out problems of the
recipe's tasks through kexa's Engine in both modes: accuracy by task and language, template
compliance (kexa.eval.tasks_eval); held-out loss on packed held-out task conversations.

RUN_DIR gets metrics.jsonl (step, loss, ..., eval/accuracy/<mode>, eval/compliance/<mode>),
checkpoints/ (exact resume), model/ (HF layout + tokenizer + chat template; LoRA merged),
sft_eval.json (before/after reports, sample chats), sft_report.md (the same as a report-card section),
training.png (loss, accuracy), sft_recipe.json.

Exit status: 0 done; 130 / 143 after SIGINT / SIGTERM (a checkpoint was saved); 1 for a bad recipe,
model folder, data file or conversation (one line saying which).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.sft_pack import (ConversationError, ListSource, PackedConversations, TaskSource, fixed_batches,
                             render_conversations)
from ..model.transformer import KExaone
from . import dist, stage
from .loop import TrainData, TrainResult, train
from .recipe import Recipe, RecipeError, _section, recipe_from_dict
from .stage import (LANGS, SourceConfig, check_model_folder, init_model, overrides_of, read_sources, read_stage,
                    refuse_checkpoints, resolve_task, run_command, stage_parser)

SFT_RECIPE = "sft_recipe.json"
EVAL_FILE = "sft_eval.json"
REPORT_FILE = "sft_report.md"  # the report-card section (accuracy by task x mode before/after, compliance, chats)


@dataclass
class SFTConfig:
    reasoning_ratio: float = 0.5  # task examples rendered in reasoning mode (filled <think>); rest non-reasoning
    epochs: float = 0.0  # > 0: train.steps = the steps that serve this many passes over the user files' conversations
    skip_bad: bool = False  # skip (and count) bad conversations instead of stopping with an error
    buffer: int = 256  # conversations per best-fit packing buffer
    heldout_batches: int = 2  # packed held-out task batches per task source (validation loss)
    eval_n: int = 4  # held-out problems per task x language x mode for accuracy / compliance
    eval_langs: list[str] = field(default_factory=lambda: list(LANGS))
    eval_tier: int = 1
    eval_max_new_tokens: int = 96
    eval_before: bool = True  # evaluate the starting model too (the "before" column)

    def __post_init__(self) -> None:
        if not 0.0 <= self.reasoning_ratio <= 1.0:
            raise ValueError(f"reasoning_ratio must lie in [0, 1], got {self.reasoning_ratio!r}")
        if not self.epochs >= 0:
            raise ValueError(f"epochs must be >= 0 (0: train.steps decides), got {self.epochs!r}")
        bad = [k for k in ("buffer", "eval_max_new_tokens") if not isinstance(getattr(self, k), int) or getattr(self, k) < 1]
        bad += [k for k in ("heldout_batches", "eval_n") if not isinstance(getattr(self, k), int) or getattr(self, k) < 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be non-negative integers (buffer, eval_max_new_tokens >= 1)")
        unknown = sorted(set(self.eval_langs) - set(LANGS))
        if unknown:
            raise ValueError(f"eval_langs has unknown language(s) {unknown}; valid: {list(LANGS)}")


@dataclass
class SFTRecipe:
    recipe: Recipe  # the shared sections, as pre-training reads them
    sft: SFTConfig
    sources: list[SourceConfig]
    lora: Any = None  # kexa.train.lora.LoRAConfig when the recipe has [lora]

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "sft": dataclasses.asdict(self.sft),
                "source": [dataclasses.asdict(s) for s in self.sources],
                "lora": dataclasses.asdict(self.lora) if self.lora is not None else None}


# evaluation settings may change between a run and its resumption; nothing that shapes the data may
EVAL_KEYS = {"eval_n", "eval_langs", "eval_tier", "eval_max_new_tokens", "eval_before"}


def load_sft_recipe(path: str | Path | None, overrides: list[str] | None = None) -> SFTRecipe:
    """Read an SFT recipe (see the module docstring) and apply `key=value` overrides (sft.*, optim.*, ...)."""
    d = read_stage(path, overrides)
    sft = _section(SFTConfig, d.pop("sft", {}), "sft")
    sources = read_sources(d, "an SFT", "task = '<name>' or file = '<path>'")
    lora = None
    if "lora" in d:
        from .lora import LoRAConfig, LoRAError
        try:
            lora = _section(LoRAConfig, d.pop("lora"), "lora")
        except LoRAError as e:
            raise RecipeError(f"[lora]: {e}") from e
    return SFTRecipe(recipe_from_dict(d), sft, sources, lora)


# ---------------------------------------------------------------------------- data


def read_user_file(path: str, skip_bad: bool) -> tuple[list[dict], int]:
    """Rows {"messages", "tools", "origin" ("file:line")} of a user data file in TRL conventions and the
    count of rows skipped as bad; reading and validation are kexa.data.conversations' (DataError
    names the file and line)."""
    from ..data.conversations import load_conversations
    loaded = load_conversations(path, skip_bad=skip_bad)
    rows = [{"messages": c.messages, "tools": c.tools, "origin": c.source} for c in loaded.conversations]
    return rows, loaded.skipped


@dataclass
class SFTData:
    batches: PackedConversations
    eval_set: list
    tasks: dict[str, Any]  # task name -> task (for the generation evaluation)
    skipped_rows: int  # bad rows skipped in user files (skip_bad)


def build_data(sr: SFTRecipe, tokenizer, rank: int = 0, world_size: int = 1, heldout: bool = True) -> SFTData:
    """The recipe's training BatchSource, its held-out batches (heldout=True) and its tasks."""
    dc, seed, cfg = sr.recipe.data, sr.recipe.train.seed, sr.sft
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id  # never a target
    capacity = dc.seq_len + 1
    sources, skipped, tasks, eval_set = [], 0, {}, []
    for s in sr.sources:
        if s.task:
            task = resolve_task(s.task)
            tasks[s.task] = task
            sources.append(TaskSource(s.name, task, tokenizer, s.langs, s.tiers, cfg.reasoning_ratio))
            if cfg.heldout_batches and heldout:
                held = TaskSource(s.name, task, tokenizer, s.langs, s.tiers, cfg.reasoning_ratio, split="heldout")
                stream = PackedConversations([held], [1.0], dc.seq_len, dc.batch_size, pad_id,
                                             seed=seed + 1, rank=rank, world_size=world_size,
                                             buffer=dc.batch_size * world_size * cfg.heldout_batches,
                                             skip_bad=cfg.skip_bad)
                eval_set += fixed_batches(stream, cfg.heldout_batches, s.name)
        else:
            rows, bad = read_user_file(s.file, cfg.skip_bad)
            items, too_long = render_conversations(tokenizer, rows, s.name, capacity, cfg.skip_bad)
            skipped += bad + too_long
            sources.append(ListSource(s.name, items, seed))
    batches = PackedConversations(sources, [s.weight for s in sr.sources], dc.seq_len, dc.batch_size,
                                  pad_id, seed=seed, rank=rank, world_size=world_size, buffer=cfg.buffer,
                                  skip_bad=cfg.skip_bad)
    return SFTData(batches, eval_set, tasks, skipped)


def steps_for_epochs(sr: SFTRecipe, data: SFTData, tokenizer) -> int:
    """Optimiser steps that serve `sft.epochs` x (all user-file conversations) from the file sources, in
    the recipe's own stream (a fresh copy, same seed): an epoch is as many file conversations as the
    files hold (TRL's concatenated dataset); task sources ride along in their weight."""
    files = {s.name for s in sr.sources if s.file}
    if not files:
        raise RecipeError("sft.epochs counts passes over user files: the recipe has no file = '...' source")
    total = sum(len(src.items) for src in data.batches.sources if src.name in files)
    stream = build_data(sr, tokenizer, 0, data.batches.world_size, heldout=False).batches  # a fresh stream: the same rows from the start
    dc, target, served, micro = sr.recipe.data, sr.sft.epochs * total, 0, 0
    while served < target:
        rows = stream.next_rows(dc.batch_size * stream.world_size)
        served += sum(item.source in files for row in rows for item in row)
        micro += 1
    return max(1, -(-micro // dc.grad_accum))


# ---------------------------------------------------------------------------- the stage
def check_resume(run_dir: Path, sr: SFTRecipe) -> None:
    """The data-shaping SFT settings of a resumed run must be those it was started with."""
    stage.check_resume(run_dir, SFT_RECIPE, sr.to_dict(), "sft", EVAL_KEYS)


def sft(sr: SFTRecipe, run_dir: str | Path, init_from: str | Path, resume: bool = False,
        quiet: bool = False, on_step=None) -> TrainResult:
    """Fine-tune the model in `init_from` on the recipe's conversations; see the module docstring.
    on_step(metrics) is called after every logged step (as in loop.train)."""
    from ..eval.tasks_eval import evaluate_tasks, flat_metrics, report_markdown
    from ..tokenizer import Tokenizer
    run_dir = Path(run_dir)
    folder = check_model_folder(init_from)
    tokenizer = Tokenizer.from_pretrained(folder)
    from . import parallel
    try:  # join the process group first (under torchrun), so the data stream shards by rank
        parallel.init_distributed(ep_size=sr.recipe.train.ep_size)
    except ValueError as e:
        raise RecipeError(f"train.ep_size: {e}") from e
    rank, world_size = dist.rank(), dist.world_size()
    data = build_data(sr, tokenizer, rank, world_size)
    if sr.sft.epochs:
        steps = steps_for_epochs(sr, data, tokenizer)
        sr = dataclasses.replace(sr, recipe=dataclasses.replace(sr.recipe, train=dataclasses.replace(sr.recipe.train, steps=steps)))
    if data.skipped_rows and not quiet and rank == 0:
        print(f"kexa sft: skipped {data.skipped_rows} bad conversation(s) in the user data (sft.skip_bad)")
    if resume:
        check_resume(run_dir, sr)
    cfg = sr.sft
    eval_tasks = data.tasks if cfg.eval_n else {}
    reports: dict[str, Any] = {}
    eval_path = run_dir / EVAL_FILE
    if resume and eval_path.exists():
        reports = json.loads(eval_path.read_text())

    def run_eval(model) -> dict:
        report = evaluate_tasks(model, tokenizer, eval_tasks, cfg.eval_langs, cfg.eval_n, cfg.eval_tier,
                                cfg.eval_max_new_tokens, seed=sr.recipe.train.seed)
        reports["after"] = report
        return flat_metrics(report)

    model, load_model, export_model, prepare_model = None, KExaone.from_pretrained, None, None
    if not resume:
        refuse_checkpoints(run_dir)
        model = init_model(sr.recipe, folder, tokenizer)
        if eval_tasks and cfg.eval_before:
            reports["before"] = evaluate_tasks(model, tokenizer, eval_tasks, cfg.eval_langs, cfg.eval_n, cfg.eval_tier,
                                               cfg.eval_max_new_tokens, seed=sr.recipe.train.seed)
    if sr.lora is not None:
        from .lora import apply_lora, load_lora_pretrained, merge_lora
        if model is not None:
            model = apply_lora(model, sr.lora)
        load_model = lambda path: load_lora_pretrained(path, sr.lora)  # noqa: E731
        export_model = merge_lora
        prepare_model = lambda m: apply_lora(m, sr.lora)  # noqa: E731  (a sharded resume: adapters, then shards)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run_dir / SFT_RECIPE).write_text(json.dumps(sr.to_dict(), indent=2) + "\n")

    train_data = TrainData({}, tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, batches=data.batches,
                           eval_set=data.eval_set)
    result = train(sr.recipe, run_dir, train_data, resume=resume, model=model, quiet=quiet, on_step=on_step,
                   extra_eval=run_eval if eval_tasks else None, desc="sft", load_model=load_model,
                   export_model=export_model, prepare_model=prepare_model)
    if rank == 0:
        reports["skipped_conversations"] = data.batches.skipped + data.skipped_rows
        eval_path.write_text(json.dumps(reports, indent=2, ensure_ascii=False) + "\n", "utf-8")
        (run_dir / REPORT_FILE).write_text(report_markdown(reports), "utf-8")
    return result


def parser() -> argparse.ArgumentParser:
    p = stage_parser("kexa sft", "Supervised fine-tuning on chat data (reasoning on/off).",
                     config="TOML SFT recipe (configs/sft_tiny.toml, configs/sft_nano.toml)",
                     init_from="the model folder to fine-tune (with its tokenizer)",
                     run_dir="output folder: metrics.jsonl, checkpoints/, model/, sft_eval.json",
                     set_example="sft.reasoning_ratio=0.3")
    p.add_argument("--skip-bad", action="store_true", help="skip bad conversations with a count (sft.skip_bad)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = overrides_of(args) + (["sft.skip_bad=true"] if args.skip_bad else [])
    return run_command("kexa sft", lambda: load_sft_recipe(args.config, overrides),
                       lambda sr: sft(sr, args.run_dir, args.init_from, resume=args.resume, quiet=args.quiet),
                       errors=(ConversationError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
