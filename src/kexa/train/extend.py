"""`kexa extend`: staged context-length extension, each stage gated by NIAH and short-context loss.

K-EXAONE extends its 8K pre-training context in two stages, 8K -> 32K -> 256K (report §3.2). Each
stage trains on a stage-specific mixture of rehearsal data (the pre-training mixture, to keep
short-context skills), synthetic reasoning data and whole long documents, and is repeated until
needle-in-a-haystack retrieval is near-perfect over the stage's range (the "green light") while
short-context evaluations are watched for regressions. Here, per stage:

    sources   rehearsal:<domain>  the pre-training recipe's train shards (its whole-run mixture)
              synthetic           kexa.data.synthetic packs at the stage length (kv / multihop / copy)
              longdoc             kexa.data.longdoc: the train documents packed whole to the stage length
    round r   loop.train(recipe at the stage's seq_len, batch, steps, lr, mixture; model = the last
              round's) -> NIAH over the stage's lengths x depths on the held-out corpus (kexa.eval.niah)
              + the short-context validation loss (held-out shards at the pre-training seq_len)
    gate      min over lengths of NIAH accuracy >= threshold  and  (loss - base) / base <= tolerance,
              base = the starting model's short-context loss
    decision  pass -> "advance"; fail and r < max_rounds -> "repeat" (train the stage again from this
              round's model); fail at the limit -> "advance_unmet" or "stop" (extend.on_fail)
Every decision is one line of RUN/extend_log.jsonl (numbers included) and of the console; RUN/model/
is the final model with its tokenizer; RUN/niah/*.png are the heat maps of every evaluation.

Positions: RoPE is applied only on sliding-window layers (their query-key offsets never exceed the
window) and global layers carry no position encoding (NoPE), so nothing positional changes with
length: rope_theta stays as pre-trained, no interpolation; only the declared context
(max_position_embeddings) is raised to the last stage's length when it is smaller. What the stages
teach is attending over longer key sets in the global layers (docs/context_extension.md).

Rounds restart the optimiser and the WSD schedule (each round is one `loop.train` call); the
model carries over. `Extender` holds the three steps (train_round, niah, short_loss) as methods so
tests can drive the gate with controlled metrics.

    kexa extend --config configs/extend_tiny.toml --run-dir runs/tiny-ext
    kexa extend --config configs/extend_nano.toml --run-dir runs/nano-ext --set extend.init_from=runs/nano/model
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.loader import heldout_batches
from ..data.longdoc import write_longdoc_shards
from ..data.shards import META, TokenShards
from ..data.synthetic import Filler, SyntheticConfig, SyntheticGenerator, write_synthetic_shards
from ..model.hf import CheckpointError
from ..model.transformer import KExaone
from .loop import NonFiniteError, TrainData, evaluate, resolve_device, train
from .recipe import Recipe, RecipeError, _section, apply_overrides, load_recipe, read_toml, recipe_from_dict

LOG = "extend_log.jsonl"
KINDS = ("rehearsal", "synthetic", "longdoc")


@dataclass
class ExtendSettings:
    base: str = "configs/tiny.toml"  # pre-training recipe: corpus, tokenizer, rehearsal mixture, short seq_len
    init_from: str = "runs/tiny/model"  # the pre-trained model folder
    threshold: float = 0.95  # NIAH accuracy every stage length must reach
    loss_tolerance: float = 0.02  # allowed relative short-context loss regression
    max_rounds: int = 3  # rounds per stage before on_fail applies
    on_fail: str = "advance"  # at the round limit: "advance" (logged as advance_unmet) or "stop"
    seed: int = 0
    base_overrides: list[str] = field(default_factory=list)  # `--set` items for the base recipe (every stage)

    def __post_init__(self) -> None:
        if self.on_fail not in ("advance", "stop"):
            raise ValueError(f"on_fail must be 'advance' or 'stop', got {self.on_fail!r}")
        if not 0 <= self.threshold <= 1 or self.loss_tolerance < 0 or self.max_rounds < 1:
            raise ValueError(f"need 0 <= threshold <= 1, loss_tolerance >= 0, max_rounds >= 1; got "
                             f"{self.threshold}, {self.loss_tolerance}, {self.max_rounds}")


@dataclass
class NiahSpec:
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    samples: int = 2
    needles: int = 1
    languages: list[str] = field(default_factory=lambda: ["en"])
    baseline: bool = True  # evaluate the starting model over every stage's lengths first
    batch_size: int = 8


@dataclass
class StageSpec:
    name: str
    seq_len: int
    steps: int
    batch_size: int = 4
    grad_accum: int = 1
    lr: float | None = None  # optim.lr for this stage (None: the base recipe's)
    weights: dict[str, float] = field(default_factory=lambda: {"rehearsal": 0.3, "synthetic": 0.5, "longdoc": 0.2})
    niah_lengths: list[int] = field(default_factory=list)  # empty: doublings above the previous stage, to seq_len
    set: list[str] = field(default_factory=list)  # further recipe overrides (schedule.*, train.*, ...)

    def __post_init__(self) -> None:
        bad = sorted(set(self.weights) - set(KINDS))
        if bad or any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"stage {self.name!r}: weights must be non-negative over {KINDS} with a positive sum, "
                             f"got {self.weights}")
        if self.seq_len < 2 or self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(f"stage {self.name!r}: seq_len >= 2, steps, batch_size, grad_accum >= 1 needed")


@dataclass
class ExtendConfig:
    extend: ExtendSettings
    niah: NiahSpec
    synthetic: SyntheticConfig
    stages: list[StageSpec]

    def lengths(self, i: int, short_seq_len: int) -> list[int]:
        """The NIAH lengths that gate stage i (default: doublings from the previous length to seq_len)."""
        stage = self.stages[i]
        if stage.niah_lengths:
            return list(stage.niah_lengths)
        prev = self.stages[i - 1].seq_len if i else short_seq_len
        out, n = [], stage.seq_len
        while n > prev and len(out) < 4:
            out.insert(0, n)
            n //= 2
        return out or [stage.seq_len]


def config_from_dict(d: dict[str, Any]) -> ExtendConfig:
    unknown = sorted(set(d) - {"extend", "niah", "synthetic", "stage"})
    if unknown:
        raise RecipeError(f"unknown section(s) {unknown}; valid: ['extend', 'niah', 'stage', 'synthetic']")
    stages = [_section(StageSpec, s, f"stage #{i + 1}") for i, s in enumerate(d.get("stage", []))]
    if not stages:
        raise RecipeError("an extension config needs at least one [[stage]]")
    lengths = [s.seq_len for s in stages]
    if lengths != sorted(set(lengths)):
        raise RecipeError(f"stage seq_len values must increase, got {lengths}")
    syn = dict(d.get("synthetic", {}))
    if "copy_items" in syn:
        syn["copy_items"] = tuple(syn["copy_items"])
    return ExtendConfig(_section(ExtendSettings, d.get("extend", {}), "extend"), _section(NiahSpec, d.get("niah", {}), "niah"),
                        _section(SyntheticConfig, syn, "synthetic"), stages)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExtendConfig:
    return config_from_dict(apply_overrides(read_toml(path, "extension config"), overrides or []))


@dataclass
class ExtensionResult:
    run_dir: Path
    model_dir: Path | None
    passed: dict[str, bool]  # stage -> gate met
    rounds: dict[str, int]  # stage -> rounds trained
    log: list[dict]


class Extender:
    """One extension run. `train_round`, `niah` and `short_loss` are the overridable steps."""

    def __init__(self, config: ExtendConfig, run_dir: str | Path, quiet: bool = False):
        self.config, self.run_dir, self.quiet = config, Path(run_dir), quiet
        self.records: list[dict] = []
        self.base = load_recipe(config.extend.base, config.extend.base_overrides)
        self.short_seq_len = self.base.data.seq_len
        self.device = resolve_device(self.base.train.device)
        self._data: TrainData | None = None

    # ------------------------------------------------------------------ data
    @property
    def data(self) -> TrainData:
        """The base recipe's corpus, tokenizer and shards (prepared once, cached by prepare_data)."""
        if self._data is None:
            from .prepare import prepare_data
            self._data = prepare_data(self.base)
        return self._data

    def rehearsal_weights(self) -> dict[str, float]:
        """The pre-training mixture averaged over the whole run (curriculum stages by fraction)."""
        names = list(self.data.train)
        stages = self.base.curriculum
        if not stages:
            w = self.base.data.weights or {n: 1.0 for n in names}
            return {n: w.get(n, 0.0) / sum(w.values()) for n in names}
        total = sum(s.fraction for s in stages)
        mix = {n: 0.0 for n in names}
        for s in stages:
            norm = sum(s.weights.values())
            for n, w in s.weights.items():
                if n in mix:  # a domain the corpus lacks was never trained on
                    mix[n] += s.fraction / total * w / norm
        return mix

    def stage_sources(self, i: int) -> tuple[dict[str, TokenShards], dict[str, float]]:
        """Shards and weights of stage i: rehearsal per domain, synthetic and long-document packs."""
        stage, cfg = self.config.stages[i], self.config
        data, tok = self.data, self.data.tokenizer
        total = sum(stage.weights.values())
        sources: dict[str, TokenShards] = {}
        weights: dict[str, float] = {}
        if stage.weights.get("rehearsal", 0) > 0:
            for n, w in self.rehearsal_weights().items():
                if w > 0:
                    sources[f"rehearsal:{n}"], weights[f"rehearsal:{n}"] = data.train[n], stage.weights["rehearsal"] / total * w
        folder = self.run_dir / "data" / f"{i}-{stage.name}"
        budget = stage.steps * stage.batch_size * stage.grad_accum * stage.seq_len * cfg.extend.max_rounds
        if stage.weights.get("synthetic", 0) > 0:
            out = folder / "synthetic"
            if not (out / META).exists():
                from .prepare import GENERATED
                filler = Filler.from_shards([s for n, s in data.train.items() if n not in GENERATED])  # natural text only
                gen = SyntheticGenerator(tok.encode, filler, cfg.synthetic, split="train")
                n = int(budget * stage.weights["synthetic"] / total * 1.1) + 2 * stage.seq_len
                write_synthetic_shards(gen, out, stage.seq_len, n, tok.vocab_size, tok.eos_id, seed=cfg.extend.seed + i)
            sources["synthetic"], weights["synthetic"] = TokenShards(out), stage.weights["synthetic"] / total
        if stage.weights.get("longdoc", 0) > 0:
            out = folder / "longdoc"
            if not (out / META).exists():
                write_longdoc_shards(list(data.train.values()), out, stage.seq_len, min_tokens=max(1, stage.seq_len // 8),
                                     seed=cfg.extend.seed + i)
            sources["longdoc"], weights["longdoc"] = TokenShards(out), stage.weights["longdoc"] / total
        return sources, weights

    def haystack(self) -> Filler:
        from ..eval.niah import haystack_from_shards
        if not self.data.heldout:
            raise RecipeError(f"the base recipe {self.config.extend.base} has no held-out shards for the NIAH haystack")
        return haystack_from_shards(list(self.data.heldout.values()))

    # ------------------------------------------------------------------ the three steps
    def stage_recipe(self, i: int, rnd: int, weights: dict[str, float]) -> Recipe:
        stage = self.config.stages[i]
        d = copy.deepcopy(self.base.to_dict())
        d["curriculum"] = []
        d["data"] |= {"seq_len": stage.seq_len, "batch_size": stage.batch_size, "grad_accum": stage.grad_accum,
                      "weights": weights}
        d["train"] |= {"steps": stage.steps, "seed": self.config.extend.seed + 1000 * i + rnd, "eval_every": 0,
                       "save_every": 0, "keep_last": 1}
        if stage.lr is not None:
            d["optim"]["lr"] = stage.lr
        return recipe_from_dict(apply_overrides(d, stage.set))

    def train_round(self, model: KExaone, i: int, rnd: int) -> tuple[KExaone, dict]:
        sources, weights = self.stage_sources(i)
        recipe = self.stage_recipe(i, rnd, weights)
        data = TrainData(train=sources, tokenizer=self.data.tokenizer, vocab_size=model.config.vocab_size)
        out_dir = self.run_dir / f"stage{i}-{self.config.stages[i].name}" / f"round{rnd}"
        result = train(recipe, out_dir, data, model=model, quiet=self.quiet)
        if result.interrupted:
            raise KeyboardInterrupt(f"extension interrupted ({result.interrupted}) in {out_dir}")
        trained = KExaone.from_pretrained(result.model_dir)  # evaluate exactly what was saved
        tail = result.history[-max(1, len(result.history) // 10):]
        return trained, {"train_loss": float(np.mean([m["loss"] for m in tail])), "steps": result.step,
                         "tok_per_s": float(np.median([m["tok_per_s"] for m in result.history])),
                         "model_dir": str(result.model_dir)}

    def niah(self, model: KExaone, lengths: list[int], tag: str) -> dict:
        from ..eval.niah import NiahConfig, evaluate_niah, plot_heatmap, save_result
        spec = self.config.niah
        cfg = NiahConfig(lengths=lengths, depths=spec.depths, samples=spec.samples, needles=spec.needles,
                         languages=spec.languages, value_digits=self.config.synthetic.value_digits,
                         seed=self.config.extend.seed, batch_size=spec.batch_size)
        result = evaluate_niah(model, self.data.tokenizer, cfg, self.haystack())
        save_result(result, self.run_dir / "niah" / f"{tag}.json")
        plot_heatmap(result, self.run_dir / "niah" / f"{tag}.png", title=f"NIAH {tag}")
        return result

    def short_loss(self, model: KExaone) -> float:
        b = self.base.data
        batches = heldout_batches(self.data.heldout, self.short_seq_len, b.batch_size, b.eval_batches)
        model.to(self.device)
        return evaluate(model, batches, self.device, self.base.train.dtype)["val_loss"]

    # ------------------------------------------------------------------ the staged loop
    def record(self, rec: dict) -> None:
        self.records.append(rec)
        with open(self.run_dir / LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if True:  # decisions always reach the console; `quiet` only silences progress bars
            niah = " ".join(f"{k}:{v:.2f}" for k, v in rec.get("niah", {}).items())
            head = f"[extend] {rec['event']}" + (f" {rec['stage']} round {rec['round']}" if "round" in rec else "")
            loss = f" short-loss {rec['short_loss']:.4f}" if "short_loss" in rec else ""
            reg = f" ({rec['regression']:+.2%})" if "regression" in rec else ""
            print(f"{head}: niah [{niah}]{loss}{reg} -> {rec.get('decision', '')} {rec.get('reason', '')}".rstrip(),
                  flush=True)

    def load_start(self) -> KExaone:
        src = Path(self.config.extend.init_from)
        if not (src / "config.json").exists():
            raise CheckpointError(f"extend.init_from = {src}: no model folder there (pre-train first: "
                                  f"kexa pretrain --config {self.config.extend.base} --run-dir DIR; then "
                                  f"--init-from DIR/model)")
        model = KExaone.from_pretrained(src)
        longest = self.config.stages[-1].seq_len
        if model.config.max_position_embeddings < longest:
            # NoPE global layers + RoPE only within the window: raising the declared context changes no weight
            raised = KExaone(model.config.replace(max_position_embeddings=longest))
            raised.load_state_dict(model.state_dict())
            model = raised
        return model

    def run(self) -> ExtensionResult:
        cfg = self.config
        if (self.run_dir / LOG).exists():  # rounds would collide with the earlier run's checkpoints
            raise CheckpointError(f"{self.run_dir} already holds an extension run ({LOG}); use a new --run-dir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        model = self.load_start()
        t0 = time.perf_counter()
        base_loss = self.short_loss(model)
        rec: dict[str, Any] = {"event": "baseline", "short_loss": base_loss, "short_seq_len": self.short_seq_len,
                               "init_from": cfg.extend.init_from, "decision": "start"}
        if cfg.niah.baseline:
            lengths = sorted({n for i in range(len(cfg.stages)) for n in cfg.lengths(i, self.short_seq_len)})
            res = self.niah(model, lengths, "baseline")
            rec |= {"niah": res["accuracy"], "niah_digits": res.get("digit_accuracy")}
        self.record(rec | {"seconds": time.perf_counter() - t0})
        passed: dict[str, bool] = {}
        rounds: dict[str, int] = {}
        stopped = False
        for i, stage in enumerate(cfg.stages):
            lengths = cfg.lengths(i, self.short_seq_len)
            for rnd in range(1, cfg.extend.max_rounds + 1):
                t1 = time.perf_counter()
                model, stats = self.train_round(model, i, rnd)
                res = self.niah(model, lengths, f"stage{i}-{stage.name}-round{rnd}")
                niah = res["accuracy"]
                loss = self.short_loss(model)
                regression = (loss - base_loss) / base_loss
                niah_min = min(niah.values())
                ok_niah, ok_loss = niah_min >= cfg.extend.threshold, regression <= cfg.extend.loss_tolerance
                reason = " and ".join(([] if ok_niah else [f"NIAH min {niah_min:.3f} < {cfg.extend.threshold}"])
                                      + ([] if ok_loss else [f"short-loss regression {regression:+.2%} > "
                                                             f"{cfg.extend.loss_tolerance:.0%}"]))
                if ok_niah and ok_loss:
                    decision, reason = "advance", f"gate met: NIAH min {niah_min:.3f}, regression {regression:+.2%}"
                elif rnd < cfg.extend.max_rounds:
                    decision = "repeat"
                else:
                    decision = "advance_unmet" if cfg.extend.on_fail == "advance" else "stop"
                    reason += f" after {rnd} rounds (extend.on_fail = {cfg.extend.on_fail})"
                self.record({"event": "round", "stage": stage.name, "round": rnd, "seq_len": stage.seq_len, **stats,
                             "niah": niah, "niah_digits": res.get("digit_accuracy"), "niah_min": niah_min, "short_loss": loss, "short_loss_base": base_loss,
                             "regression": regression, "threshold": cfg.extend.threshold,
                             "loss_tolerance": cfg.extend.loss_tolerance, "decision": decision, "reason": reason,
                             "seconds": time.perf_counter() - t1})
                rounds[stage.name], passed[stage.name] = rnd, ok_niah and ok_loss
                if decision != "repeat":
                    break
            if decision == "stop":
                stopped = True
                break
        model_dir = self.run_dir / "model"
        model.save_pretrained(model_dir)
        self.data.tokenizer.save_pretrained(model_dir)
        self.record({"event": "done", "decision": "stopped" if stopped else "finished", "passed": passed,
                     "rounds": rounds, "model_dir": str(model_dir), "seconds": time.perf_counter() - t0})
        return ExtensionResult(self.run_dir, model_dir, passed, rounds, self.records)


def run_extension(config: ExtendConfig | str | Path, run_dir: str | Path, quiet: bool = False) -> ExtensionResult:
    """Run the staged extension of `config` (an ExtendConfig or a TOML path) in run_dir."""
    if not isinstance(config, ExtendConfig):
        config = load_config(config)
    return Extender(config, run_dir, quiet=quiet).run()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kexa extend", description="Staged context extension gated by NIAH.")
    p.add_argument("--config", required=True, help="extension TOML (configs/extend_tiny.toml, ...)")
    p.add_argument("--run-dir", required=True, help="output folder: extend_log.jsonl, niah/, stage*/, model/")
    p.add_argument("--init-from", default=None, help="pre-trained model folder (overrides extend.init_from)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set extend.threshold=0.9 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = list(args.overrides) + ([f"extend.init_from={json.dumps(args.init_from)}"] if args.init_from else [])
    try:
        config = load_config(args.config, overrides)
        base = load_recipe(config.extend.base, config.extend.base_overrides)
        if base.train.threads:  # process-wide: set by the command, not the library
            torch.set_num_threads(base.train.threads)
        result = run_extension(config, args.run_dir, quiet=args.quiet)
    except (RecipeError, CheckpointError, NonFiniteError, FileNotFoundError, ValueError) as e:
        print(f"kexa extend: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"model_dir": str(result.model_dir), "passed": result.passed, "rounds": result.rounds}))
    return 0 if all(result.passed.values()) else 3


if __name__ == "__main__":
    sys.exit(main())
