"""The training loop shared by every recipe stage: one readable optimiser step, checkpoints, resume.

    for each optimiser step s:
        lr = base_lr * WSD(s)                                   (schedule.py; Muon and AdamW groups alike)
        repeat grad_accum times:                                (micro-batches from the packed loader)
            with autocast(bf16): out = model(x); loss = CE + 0.05 MTP-CE + 1e-4 balance   (model.loss)
            (loss weighted by this micro-batch's share of the global valid tokens).backward()
            loads += out.expert_loads
        grad_norm = clip(global grad norm, 1.0)
        if loss and grad_norm are finite: optimiser steps; expert biases += gamma sign(mean - load)
        else: skip the step (zero grads), count it; abort after K in a row (last good checkpoint kept)
        log one line to metrics.jsonl (+ the progress bar); evaluate / save on their cadence
SIGINT/SIGTERM set a flag; the loop finishes the current step, saves a checkpoint and returns.

Stages reuse `train()`: pre-training calls it with the recipe's data; context extension
(`kexa extend`) calls it with another mixture / seq_len and `init_from=` a previous model folder.
Data arrives as a `TrainData` (token sources and an optional tokenizer), so callers that build
their own shards (tests, benchmarks, later stages) skip `prepare.py`.

The stage seam (SFT today; RL and preference next): a stage that is not "packed token shards +
next-token CE" hands the loop
  - `TrainData.batches`: its own BatchSource (`next_batch()`, `state_dict()`, `load_state_dict()`,
    `stage`); a batch is `(input_ids, labels)` or `(input_ids, labels, inputs)` where `inputs` is a
    dict of extra model-forward tensors (e.g. `document_ids` of packed conversations);
    `TrainData.eval_set`: its held-out batches `(name, input_ids, labels[, inputs])`;
  - `train(loss=...)`: a StepLoss `(model, batch, mtp_weight, balance_coef) -> (loss, parts, out)`
    whose loss is a mean over the batch's target tokens (labels != -100), like `model_loss`;
  - `train(extra_eval=...)`: its own evaluation, run with the held-out loss (train.eval_every, last step);
  - `train(step_metrics=...)`: its own per-step metrics (m -> dict merged into the step's line; RL's
    rewards and importance weights);
  - the frozen router through `[balance] freeze_router` (BiasBalancer).
Everything else — token-weighted accumulation, clipping, the non-finite guard, bias updates,
checkpoints and exact resume (the source's state is saved with the step) — stays the one loop.

Exact resume: the checkpoint holds weights (fp32 safetensors, expert biases included), optimiser
states, the loader's generator and cursors, the torch RNG and the step; metrics.jsonl is truncated
to the checkpoint's step. On CPU in one process the resumed loss sequence equals the uninterrupted
one bitwise (tests/test_train_loop.py, with a real SIGTERM to a subprocess); under torchrun the
checkpoint is sharded (checkpoint.py) and so is the resume (tests/test_dist_checkpoint.py). A resume
whose train.steps moves the WSD or curriculum boundaries is refused unless allowed (`schedule_change`).

Distributed (torchrun, WORLD_SIZE set): a fresh model is built on the meta device, then
`parallel.init_distributed` + `parallel.parallelize` (FSDP2, optional expert parallelism) +
`parallel.init_sharded` (each rank initialises its own shards); each rank reads its slice of the
global batch (the loader shards by rank); expert loads, losses and the non-finite flag are
all-reduced (dist.py, on the process group's device), so every rank takes the same decision and
the same bias update; rank 0 alone logs, draws the progress bar and writes files.

    python -c "from kexa.train.loop import train; help(train)"
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from ..data.loader import IGNORE, Curriculum, PackedLoader, Stage, heldout_batches
from ..data.shards import TokenShards
from ..model import fp8
from ..model.hf import CheckpointError
from ..model.transformer import KExaone
from . import checkpoint as ckpt
from . import dist as D
from .balance import BiasBalancer, load_histogram, max_violation
from .optim import build_optimizers
from .recipe import Recipe, RecipeError, resume_mismatches
from .schedule import set_lr

METRICS = "metrics.jsonl"


class NonFiniteError(RuntimeError):
    """Too many consecutive optimiser steps with a non-finite loss or gradient norm."""


class BatchSource(Protocol):
    """What the loop draws micro-batches from (PackedLoader for pre-training, a stage's own source otherwise)."""

    stage: str  # the curriculum stage / phase name logged with each step

    def next_batch(self) -> tuple: ...  # (input_ids (B, T), labels (B, T)[, {name: (B, T) tensor}])

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    # optional: step_metrics() -> dict, merged into the step's metrics line (e.g. the preference stage's rewards)


# (model, batch on device, mtp_weight, balance_coef) -> (loss: mean over the batch's target tokens
# (+ weighted auxiliary terms), parts {"ce", "mtp"?, "balance"?} detached, ModelOutput)
StepLoss = Callable[[nn.Module, tuple, float, float], tuple[torch.Tensor, dict, Any]]


def model_loss(model: nn.Module, batch: tuple, mtp_weight: float, balance_coef: float):
    """The default StepLoss: next-token CE + MTP CE + balance (KExaone.loss) on model(input_ids, **inputs)."""
    x, y, *rest = batch
    out = model(x, **(rest[0] if rest else {}))
    loss, parts = model.loss(out, y, mtp_weight=mtp_weight, balance_coef=balance_coef)
    return loss, parts, out


@dataclass
class TrainData:
    train: dict[str, TokenShards]  # source -> training shards
    heldout: dict[str, TokenShards] = field(default_factory=dict)  # source -> held-out shards
    tokenizer: Any = None  # saved beside the model (save_pretrained) when given
    vocab_size: int | None = None  # overrides the preset's vocabulary (the tokenizer's size)
    batches: BatchSource | None = None  # a stage's own batch source (then `train` shards are not read)
    eval_set: list | None = None  # a stage's held-out batches (name, input_ids, labels[, inputs]) (then `heldout` is not read)


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimiser steps completed
    last_loss: float
    interrupted: str | None  # "SIGINT" / "SIGTERM" when stopped by a signal
    skipped_steps: int
    model_dir: Path | None  # RUN/model (None when interrupted)
    history: list[dict] = field(default_factory=list)  # this call's metrics lines


# ---------------------------------------------------------------------------- precision / device
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("train.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype != "bf16":
        raise RecipeError(f"train.dtype must be 'bf16' or 'fp32', got {dtype!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def enable_fp8(model: nn.Module, device: torch.device, emulate: bool = False) -> str:
    """FP8 training (reference §9): torchao Float8Linear (tensorwise) for the eligible nn.Linear layers and
    FP8 grouped GEMMs for the routed experts (model/fp8.py: torchao's rowwise grouped GEMM on SM90+, one
    scaled_mm per expert on SM89). Router, norms, embeddings, lm_head and the MTP projection stay high
    precision. Refuses with one RecipeError line, changing nothing, without an SM89+ GPU or torchao.
    `emulate`: both run as CPU emulations (numerics only, for tests). Returns the expert backend."""
    try:
        backend = "emulate" if emulate else fp8.select_backend(device)
    except fp8.Fp8Unavailable as e:
        raise RecipeError(f"train.fp8: {e}. Set train.fp8 = false (bf16 autocast is used then).") from None
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as e:
        raise RecipeError("train.fp8 needs torchao: pip install 'kexa[fp8]'") from e

    def keep(module: nn.Module, fqn: str) -> bool:
        # head and MTP projection stay bf16 (DeepSeek-V3 FP8 recipe); FP8 GEMMs need dims % 16 == 0.
        # Routers are not nn.Linear (fp32, untouched); the 3-D expert stacks are converted below.
        return (isinstance(module, nn.Linear) and fqn != "lm_head" and not fqn.startswith("mtp.fc")
                and module.in_features % 16 == 0 and module.out_features % 16 == 0)

    try:
        fp8.convert_experts(model, backend)  # checks every expert's shapes before flagging any
    except fp8.Fp8Unavailable as e:
        raise RecipeError(f"train.fp8: {e}. Set train.fp8 = false (bf16 autocast is used then).") from None
    if backend == "scaled_mm":
        warnings.warn(f"train.fp8: no FP8 grouped GEMM on this GPU (compute capability "
                      f"{torch.cuda.get_device_capability(device)}; torchao's needs SM90 and torchao >= 0.18): "
                      f"the routed experts run one torch._scaled_mm per expert", stacklevel=2)
    convert_to_float8_training(model, module_filter_fn=keep, config=Float8LinearConfig(emulate=emulate))
    return backend


class StopFlag:
    """SIGINT/SIGTERM handler: remember the signal; the loop saves and returns after this step."""

    def __init__(self):
        self.signal: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------- model / state
def build_model(recipe: Recipe, data: TrainData, init_from: str | Path | None, meta: bool = False) -> KExaone:
    """The model a run starts from: `init_from`'s weights, or a fresh init drawn from a generator
    seeded with train.seed (`init_weights(seed=)`: the values do not depend on what else used the
    global RNG). meta=True (a fresh model under torchrun) leaves it on the meta device:
    `parallel.parallelize` allocates each rank's shards and `parallel.init_sharded` fills them with
    the same draws, so no rank holds the whole model."""
    if init_from is not None:
        source = KExaone.from_pretrained(init_from)
        overrides = {k: v for k, v in recipe.model.items() if k != "preset"}
        model = KExaone(source.config.replace(**overrides))
        model.load_state_dict(source.state_dict())
        return model
    with torch.device("meta"):  # shapes only: the values come from init_weights' own generator below
        model = KExaone(recipe.model_config(data.vocab_size))
    if not meta:
        model.to_empty(device="cpu")
        model.init_weights(seed=recipe.train.seed)
    return model


def curriculum(recipe: Recipe, sources: dict[str, TokenShards], steps: int) -> Curriculum:
    """The recipe's curriculum over `steps`; without one, a single stage of data.weights (default uniform)."""
    stages = recipe.curriculum or [Stage("main", 1.0, recipe.data.weights or {n: 1.0 for n in sources})]
    return Curriculum(stages, steps, list(sources))


def schedule_boundaries(recipe: Recipe, sources: list[str], steps: int) -> dict[str, Any]:
    """The steps at which a run of `steps` optimiser steps changes its learning rate or its data:
    WSD's warmup end and decay start (schedule.py) and the first step of every curriculum stage after
    the first (loader.Curriculum). All of them scale with train.steps. A stage with its own batch
    source (no token sources: SFT, RL) has no curriculum, only the schedule."""
    warmup, decay = round(recipe.schedule.warmup * steps), round(recipe.schedule.decay * steps)  # as WSD.factor
    starts = [math.ceil(e) for e in curriculum(recipe, dict.fromkeys(sources), steps).ends[:-1]] if sources else []
    return {"warmup_end": warmup, "decay_start": steps - decay if decay else None, "stage_starts": starts}


def schedule_change(recipe: Recipe, sources: list[str], saved_steps: int, allow: bool) -> str | None:
    """On resume with another train.steps: None if the schedule's boundaries are unchanged, else a
    line naming old -> new boundaries (returned when `allow`, raised as a RecipeError otherwise).
    A resumed run with moved boundaries is not the run the checkpoint started: the decay would begin
    at another step, and a stage already half-read would end early or late."""
    old = schedule_boundaries(recipe, sources, saved_steps)
    new = schedule_boundaries(recipe, sources, recipe.train.steps)
    if old == new:
        return None
    moved = ", ".join(f"{k} {old[k]} -> {new[k]}" for k in old if old[k] != new[k])
    line = f"train.steps {saved_steps} -> {recipe.train.steps} moves the schedule: {moved}"
    if not allow:
        raise RecipeError(f"cannot resume: {line}; pass --allow-schedule-change to accept it, or resume "
                          f"with train.steps = {saved_steps}")
    return line


@torch.no_grad()
@torch.compiler.set_stance("force_eager")  # a rare no-grad pass: not worth tracing compiled blocks again
def evaluate(model: nn.Module, batches: list, device: torch.device, dtype: str,
             histogram: bool = False) -> dict[str, Any]:
    """Token-weighted held-out CE (overall and per source) and MaxVio_global over the whole pass;
    histogram=True adds "expert_load_global", the per-layer expert load shares (M, E)."""
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    loads = None
    try:
        for name, x, y, *rest in batches:
            x, y, inputs = x.to(device), y.to(device), to_device(rest[0] if rest else {}, device)
            with autocast(device, dtype):
                out = model(x, compute_mtp=False, **inputs)
            valid = int((y != -100).sum())
            ce = torch.nn.functional.cross_entropy(out.logits.float().flatten(0, 1), y.flatten(), ignore_index=-100,
                                                   reduction="sum")
            s = sums.setdefault(name, [0.0, 0])
            s[0], s[1] = s[0] + float(ce), s[1] + valid
            if out.expert_loads is not None:
                loads = out.expert_loads.float() if loads is None else loads + out.expert_loads.float()
    finally:
        model.train(was_training)
    names = sorted(sums)
    totals = D.all_reduce_sum(torch.tensor([[sums[n][0], sums[n][1]] for n in names], dtype=torch.float64))
    metrics = {f"val_loss/{n}": float(t[0] / max(t[1], 1)) for n, t in zip(names, totals)}
    metrics["val_loss"] = float(totals[:, 0].sum() / totals[:, 1].sum().clamp_min(1))
    if loads is not None:
        loads = D.all_reduce_sum(loads)  # (M, E) over the whole held-out pass
        metrics["maxvio_global"] = float(max_violation(loads).mean())
        if histogram:
            metrics["expert_load_global"] = [[round(x, 5) for x in row] for row in load_histogram(loads)]
    return metrics


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


def truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after `step` (they came after the checkpoint we resume from)."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


# ---------------------------------------------------------------------------- the loop
def train(recipe: Recipe, run_dir: str | Path, data: TrainData, *, resume: bool = False,
          init_from: str | Path | None = None, model: KExaone | None = None, quiet: bool = False,
          on_step: Callable[[dict], None] | None = None, loss: StepLoss = model_loss,
          extra_eval: Callable[[nn.Module], dict] | None = None, desc: str = "pretrain",
          load_model: Callable[[Path], KExaone] = KExaone.from_pretrained,
          export_model: Callable[[KExaone], KExaone] | None = None,
          prepare_model: Callable[[KExaone], KExaone] | None = None,
          step_metrics: Callable[[dict], dict] | None = None,
          allow_schedule_change: bool = False) -> TrainResult:
    """Run (or resume) the recipe's optimiser steps in `run_dir`; see the module docstring.

    init_from: an HF model folder to start from (later stages); model: a ready model for a fresh
    run (tests, benchmarks); on_step(metrics) is called after every logged step; loss: the stage's
    StepLoss (default: model_loss); extra_eval(model) -> metrics runs beside the held-out loss on
    its cadence (a stage's own evaluation, e.g. SFT's task accuracy); desc: the progress bar's label;
    load_model(folder): how a checkpoint's model/ is read on resume (LoRA: with its adapters);
    export_model(model): applied once before RUN/model is written (LoRA: merge the adapters);
    prepare_model(model): applied to the model built for a sharded (torchrun) resume before its shards
    are loaded (LoRA: add the adapters, so the checkpoint's adapter shards have somewhere to go);
    step_metrics(m) -> the stage's own numbers about this step (rollout rewards, IS statistics), merged
    into the step's metrics line `m` before it is written;
    allow_schedule_change: resume even if another train.steps moves the WSD / curriculum boundaries
    (`schedule_change`; the old and new boundaries are printed)."""
    run_dir = Path(run_dir)
    tc, dc = recipe.train, recipe.data
    device = resolve_device(tc.device)
    from . import parallel  # FSDP2 / expert parallelism live there (owned by the distributed stage)
    mesh = parallel.init_distributed(ep_size=tc.ep_size)
    rank, world_size = D.rank(), D.world_size()
    main = rank == 0
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)

    if not resume and ckpt.list_checkpoints(run_dir):
        raise CheckpointError(f"{run_dir} already holds checkpoints: pass --resume to continue, or use a new --run-dir")
    resume_from = None
    if resume:
        resume_from = ckpt.latest_checkpoint(run_dir)
        if resume_from is None:
            raise CheckpointError(f"--resume: no valid checkpoint in {ckpt.checkpoint_dir(run_dir)}")
        saved = ckpt.load_recipe_dict(resume_from)
        problems = resume_mismatches(saved, recipe.to_dict())
        if problems:
            raise RecipeError(f"cannot resume from {resume_from}: the recipe differs in\n  " + "\n  ".join(problems)
                              + "\n(use a new --run-dir, or the original recipe)")
        saved_steps = saved.get("train", {}).get("steps", tc.steps)
        moved = schedule_change(recipe, list(data.train), saved_steps, allow_schedule_change)
        if moved and main:
            print(f"resuming from {resume_from} with a changed schedule (--allow-schedule-change): {moved}",
                  file=sys.stderr, flush=True)
        # a sharded checkpoint is loaded into the parallelized model below (built on meta); a full one here
        if ckpt.is_sharded(resume_from):
            model = build_model(recipe, data, None, meta=mesh is not None)
            model = prepare_model(model) if prepare_model is not None else model
        else:
            model = load_model(resume_from / ckpt.MODEL)
    elif model is None:
        model = build_model(recipe, data, init_from, meta=mesh is not None and init_from is None)

    on_meta = any(p.is_meta for p in model.parameters())
    if not on_meta:
        model.to(device)
    if tc.fp8:
        enable_fp8(model, device)
    if tc.compile:
        model.compile_blocks()
    model = parallel.parallelize(model, mesh, activation_checkpointing=tc.activation_checkpointing)
    if on_meta and resume_from is None:  # the same draws as a single-process build from train.seed
        parallel.init_sharded(model, seed=tc.seed)  # (resuming, load_sharded fills every tensor instead)
    model.train()
    optimizers = build_optimizers(model, recipe.optim)
    balancer = BiasBalancer(model, recipe.balance)
    if data.batches is not None:
        loader = data.batches
    else:
        loader = PackedLoader(data.train, dc.seq_len, dc.batch_size, curriculum(recipe, data.train, tc.steps),
                              seed=tc.seed, rank=rank, world_size=world_size, micro_per_step=dc.grad_accum)
    eval_set = (data.eval_set if data.eval_set is not None else
                heldout_batches(data.heldout, dc.seq_len, dc.batch_size, dc.eval_batches, rank, world_size))

    step, skipped, tokens_seen = 0, 0, 0
    if resume_from is not None:
        state = ckpt.load_train_state(resume_from)
        if ckpt.is_sharded(resume_from):
            ckpt.load_sharded(resume_from, model, optimizers)
        else:
            ckpt.load_optimizer_states(model, optimizers, state["optimizers"])
        loader.load_state_dict(state["loader"])
        ckpt.set_rng_state(state["rng"])
        step, skipped, tokens_seen = state["step"], state["skipped"], state["tokens"]
        if main:
            truncate_metrics(run_dir / METRICS, step)
    elif main:
        (run_dir / METRICS).unlink(missing_ok=True)  # a fresh run starts a fresh log

    def save(at: int) -> Path | None:
        state = {"loader": loader.state_dict(), "skipped": skipped, "tokens": tokens_seen}
        # with the tokenizer, every checkpoint's model/ is a complete model folder (eval, extend --init-from)
        return ckpt.save_checkpoint(run_dir, at, model, optimizers, state, recipe.to_dict(), tc.keep_last,
                                    tokenizer=data.tokenizer, async_save=tc.async_checkpoint)

    bar = None
    if main and not quiet:
        from tqdm import tqdm
        bar = tqdm(total=tc.steps, initial=step, desc=f"{desc} {run_dir.name}", dynamic_ncols=True, unit="step")
    params = [p for p in model.parameters() if p.requires_grad]
    history: list[dict] = []
    bad_in_row, last_loss, interrupted = 0, float("nan"), None
    log = open(run_dir / METRICS, "a") if main else None
    t_start = time.perf_counter()
    try:
        with StopFlag() as stop:
            while step < tc.steps:
                ckpt.poll_pending()  # seal an async checkpoint as soon as its background write is done
                t0 = time.perf_counter()
                lr = set_lr(optimizers, recipe.schedule.factor(step, tc.steps))
                stage = loader.stage
                # ---- forward / backward over micro-batches. The step's loss is sum(token CE) / N with N the
                # valid labels of the GLOBAL batch (all micro-batches, all ranks; torchtitan's convention), so
                # the gradient does not depend on how the batch is split. model.loss returns per-micro-batch
                # means, so each term is weighted by its share of N: w = n_micro * world / N (x world: FSDP2
                # averages gradients over ranks); MTP counts its own labels (labels[:, 1:]); the balance loss
                # (a per-sequence mean) is a plain mean over micro-batches and ranks.
                micro = [loader.next_batch() for _ in range(dc.grad_accum)]
                valid = torch.tensor([[(b[1] != IGNORE).sum(), (b[1][:, 1:] != IGNORE).sum()] for b in micro],
                                     dtype=torch.float64)  # (grad_accum, 2): main / MTP labels per micro-batch
                n_global = D.all_reduce_sum(valid.sum(0)).clamp_min(1).tolist()
                sums = torch.zeros(3, dtype=torch.float64)  # token-summed CE, token-summed MTP CE, balance
                loads = None
                for batch, (n_ce, n_mtp) in zip(micro, valid.tolist()):
                    x, y, *rest = batch
                    batch = (x.to(device), y.to(device), *(to_device(r, device) for r in rest))
                    w_ce, w_mtp = n_ce * world_size / n_global[0], n_mtp * world_size / n_global[1]
                    # loss = ce + mtp_weight mtp + coef balance, rescaled below to w_ce ce + ...; an all-ignored
                    # micro-batch has ce = 0 (any scale works); one process, no accumulation: scale = 1 exactly
                    scale = w_ce or 1.0
                    with autocast(device, tc.dtype):
                        loss_value, parts, out = loss(model, batch, recipe.balance.mtp_weight * w_mtp / scale,
                                                      recipe.balance.alpha / (dc.grad_accum * scale))
                    (loss_value * scale).backward()
                    sums += torch.tensor([float(parts["ce"]) * n_ce, float(parts.get("mtp", 0.0)) * n_mtp,
                                          float(parts.get("balance", 0.0))], dtype=torch.float64)
                    if out.expert_loads is not None:
                        loads = out.expert_loads.detach() if loads is None else loads + out.expert_loads.detach()
                # ---- global loss (mean CE per token), gradient norm, non-finite guard (same decision on every rank)
                ce, mtp, balance = (D.all_reduce_sum(sums) / torch.tensor([*n_global, dc.grad_accum * world_size],
                                                                        dtype=torch.float64)).tolist()
                total = ce + recipe.balance.mtp_weight * mtp + recipe.balance.alpha * balance
                grad_norm = parallel.clip_grad_norm_(params, recipe.optim.grad_clip or math.inf)
                finite = math.isfinite(total) and math.isfinite(float(grad_norm))
                balance_metrics = {}
                if finite:
                    for opt in optimizers:
                        opt.step()
                    balance_metrics = balancer.update(loads)
                    bad_in_row = 0
                else:
                    skipped += 1
                    bad_in_row += 1
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                step += 1
                step_tokens = sum(b[0].numel() for b in micro) * world_size  # rows x length (padding included)
                tokens_seen += step_tokens
                dt = time.perf_counter() - t0
                last_loss = ce
                m = {"step": step, "loss": ce, "loss_total": total, "mtp": mtp, "balance": balance, "lr": lr,
                     "grad_norm": float(grad_norm), "tokens": tokens_seen, "tok_per_s": step_tokens / dt,
                     "step_s": dt, "stage": stage, "skipped": not finite, "target_tokens": int(n_global[0]),
                     **balance_metrics}
                if step_metrics is not None:
                    m |= step_metrics(m)
                last = step == tc.steps
                if last or (tc.eval_every and step % tc.eval_every == 0):
                    if eval_set:
                        m |= evaluate(model, eval_set, device, tc.dtype, histogram=True)
                    if extra_eval is not None:
                        m |= extra_eval(model)
                history.append(m)
                if log is not None:
                    log.write(json.dumps(m) + "\n")
                    log.flush()
                if bar is not None:
                    bar.update(1)
                    if step % tc.log_every == 0 or last:
                        bar.set_postfix_str(f"loss {last_loss:.3f} lr {lr:.2e} tok/s {m['tok_per_s']:.0f} "
                                            f"maxvio {m.get('maxvio', 0.0):.2f}" + (" SKIPPED" if not finite else ""))
                if on_step is not None:
                    on_step(m)
                if bad_in_row >= tc.max_bad_steps:
                    good = ckpt.latest_checkpoint(run_dir)
                    raise NonFiniteError(f"{bad_in_row} consecutive steps with a non-finite loss or gradient "
                                         f"(last at step {step}); stopping. Last good checkpoint: "
                                         f"{good if good else 'none saved yet'}")
                if D.any_rank(stop.signal is not None):  # all ranks stop at the same step
                    interrupted = stop.signal or "SIGTERM"
                    save(step)
                    break
                if tc.save_every and step % tc.save_every == 0 and not last:
                    save(step)
    except BaseException:
        try:  # let the last good async checkpoint finish and be sealed (no collective: other ranks may be gone)
            ckpt.wait_pending(sync_ranks=False)
        except Exception as e:
            warnings.warn(f"{e}", stacklevel=1)
        raise
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    model_dir = None
    if interrupted is None:
        save(step)  # under torchrun with train.async_checkpoint, written while the model is exported below
        model_dir = run_dir / "model"
        if export_model is not None:
            model = export_model(model)
        if world_size > 1:
            parallel.save_full_pretrained(model, model_dir)
        elif main:
            model.save_pretrained(model_dir)
        if main and data.tokenizer is not None:
            data.tokenizer.save_pretrained(model_dir)
        if main and tc.plot:
            from ..plots import plot_run
            plot_run(run_dir / METRICS, run_dir / "training.png")
    ckpt.wait_pending()  # every rank returns with its last checkpoint complete and sealed
    if interrupted is not None and main and not quiet:
        print(f"{interrupted}: saved checkpoint at step {step} in {ckpt.checkpoint_dir(run_dir)}; "
              f"continue with --resume")
    if main and not quiet and interrupted is None:
        took = time.perf_counter() - t_start
        print(f"done: {step} steps, loss {last_loss:.4f}, {skipped} skipped, {took:.1f}s; model in {model_dir}")
    return TrainResult(run_dir, step, last_loss, interrupted, skipped, model_dir, history)
