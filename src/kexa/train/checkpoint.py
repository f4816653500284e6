"""Atomic training checkpoints: the model and the full training state, manifest last.

One process:
    RUN/checkpoints/step_00000150/
        model/             model.save_pretrained(): config.json + safetensors (HF exaone_moe layout);
                           the expert biases are model buffers, so they are in here; plus the
                           tokenizer files when the run has a tokenizer (a complete model folder)
        train_state.pt     optimiser states, loader state, torch/python RNG, step and counters
        recipe.json        the recipe (compared on resume: `recipe.resume_mismatches`)
        manifest.json      written LAST: step, and the size + sha256 of every other file
Under torchrun (FSDP2 / EP), sharded — nothing is gathered, each rank writes what it holds:
    RUN/checkpoints/step_00000150/
        shards/            torch.distributed.checkpoint: weights and optimiser states, one file per
                           rank (__<rank>_0.distcp) + .metadata; loadable at any world size
        hf/                config.json (+ tokenizer files): `kexa export` turns shards/ into a model folder
        train_state.pt     loader state, RNG, step and counters (rank 0's; the optimiser is in shards/)
        recipe.json, manifest.json

Async saves (`train.async_checkpoint`, under torchrun only): `dcp.async_save` copies the rank's shards
to CPU memory (the staging copy: one shard of weights + optimiser states, held until written), returns,
and writes them from a background thread whose collectives use a dedicated gloo group (never the
training's group: two threads must not interleave collectives on one group). Training goes on. The
checkpoint is sealed — manifest written, temporary folder renamed into place — only once the write has
completed (`wait_pending`: at the next save, at the end of `train`, or as soon as a poll finds it
done), so a step folder never names a save still in flight; one save is in flight at most.

A checkpoint is built in a hidden temporary folder beside its final name, every file fsynced, the
manifest written, the folder renamed into place and the parent fsynced (torch.distributed.checkpoint
also marks completeness with a final metadata file). Readers trust only folders whose manifest
exists and whose files match it: a folder without a manifest is an interrupted write (skipped with a
warning); a size or hash mismatch is corruption (skipped with a warning naming the file); if no
checkpoint is valid, resuming fails with `CheckpointError`. Keep-last-N prunes only after a new
checkpoint is complete, so the last good one always survives.

    python -c "from kexa.train.checkpoint import latest_checkpoint; print(latest_checkpoint('runs/tiny'))"
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..model.hf import CheckpointError, atomic_write, fsync_dir
from .dist import barrier, distributed, is_main

MANIFEST, STATE, RECIPE, MODEL = "manifest.json", "train_state.pt", "recipe.json", "model"
SHARDS, CONFIG = "shards", "hf"  # sharded checkpoints: torch.distributed.checkpoint files, config + tokenizer
FORMAT = "kexa-train-checkpoint-v1"
FORMAT_SHARDED = "kexa-train-checkpoint-sharded-v1"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_optimizer_states(model: nn.Module, optimizers: list[torch.optim.Optimizer], states: list) -> None:
    """Full optimiser states (a single-process checkpoint) into this run's optimisers; under torchrun
    `set_optimizer_state_dict` re-shards them."""
    if len(states) != len(optimizers):
        raise CheckpointError(f"checkpoint has {len(states)} optimiser state(s), this run builds {len(optimizers)}: "
                              f"was the optimiser changed?")
    if not distributed():
        for opt, s in zip(optimizers, states):
            opt.load_state_dict(s)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    for opt, s in zip(optimizers, states):
        for group, saved in zip(opt.param_groups, s["param_groups"]):
            for key, value in saved.items():  # DCP maps only keys the fresh groups have (initial_lr
                group.setdefault(key, value)  # appears at the first set_lr)
        set_optimizer_state_dict(model, opt, s, options=StateDictOptions(full_state_dict=True))


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizers: list[torch.optim.Optimizer],
                    train_state: dict, recipe: dict, keep_last: int = 2, tokenizer=None,
                    async_save: bool = False) -> Path:
    """Write RUN/checkpoints/step_N atomically and return its path. One process: the HF model folder
    plus full optimiser states. Under torchrun: sharded (collective; see the module docstring), and with
    `async_save` written in the background: the path exists only after `wait_pending()`."""
    root = checkpoint_dir(run_dir)
    final = root / f"step_{step:08d}"
    if distributed():
        return save_sharded(root, final, step, model, optimizers, train_state, recipe, keep_last, tokenizer,
                            async_save)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp / MODEL)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / MODEL)
    state = dict(train_state, step=step, optimizers=[opt.state_dict() for opt in optimizers], rng=rng_state(),
                 format=FORMAT)
    atomic_write(tmp / STATE, lambda p: torch.save(state, p))
    seal(tmp, final, step, recipe, FORMAT, keep_last)
    return final


@dataclass
class PendingSave:
    """An async sharded save in flight: `future` completes on every rank once all shards and DCP's
    .metadata are written (the coordinator gathers every rank's write results first)."""
    future: Future
    final: Path
    seal: Callable[[], None] | None  # rank 0: manifest + rename into place; other ranks: nothing to do


_pending: PendingSave | None = None
_async_group: tuple | None = None  # (the default group it was made for, the gloo group for async saves)


def async_group():
    """A gloo group of all ranks for the background save thread's collectives (made once per process
    group; making it is itself collective, and every rank saves together, so all ranks get here)."""
    global _async_group
    import torch.distributed as dist
    world = dist.group.WORLD
    if _async_group is None or _async_group[0] is not world:
        _async_group = (world, dist.new_group(backend="gloo"))
    return _async_group[1]


def pending_save() -> PendingSave | None:
    return _pending


def wait_pending(sync_ranks: bool = True) -> Path | None:
    """Block until the in-flight async save is written, then seal it (rank 0); returns its path, or None
    when nothing was in flight. `sync_ranks`: a barrier after, so every rank sees the sealed folder."""
    global _pending
    if _pending is None:
        return None
    pending, _pending = _pending, None
    try:
        pending.future.result()
    except Exception as e:  # the temporary folder stays unsealed (never a step folder) and is pruned later
        raise CheckpointError(f"async checkpoint {pending.final.name} failed while writing: {e}") from e
    if pending.seal is not None:
        pending.seal()
    if sync_ranks:
        barrier()
    return pending.final


def poll_pending() -> None:
    """Seal the in-flight async save if its write has finished (non-blocking, no collective)."""
    if _pending is not None and _pending.future.done():
        wait_pending(sync_ranks=False)


def save_sharded(root: Path, final: Path, step: int, model: nn.Module, optimizers: list[torch.optim.Optimizer],
                 train_state: dict, recipe: dict, keep_last: int, tokenizer, async_save: bool = False) -> Path:
    """Every rank writes its own shards of the weights and optimiser states with
    torch.distributed.checkpoint (no gather: a rank's memory stays its shard); rank 0 writes the
    config, tokenizer, training state and, once all shards are on disk, the manifest. With
    `async_save` (where dcp has it) the shards are written in the background and sealed later."""
    global _pending
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from ..model.hf import hf_config_dict
    async_save = async_save and hasattr(dcp, "async_save")
    wait_pending(sync_ranks=False)  # the previous save completes (and is sealed) before this one starts
    tmp = root / f".tmp-step_{step:08d}-sharded"  # one name for all ranks: each writes its files into it
    if is_main():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    model_state, optim_state = get_state_dict(model, optimizers)  # DTensor shards, nothing gathered
    state_dict = {"model": model_state, "optim": optim_state}
    if async_save:  # staged to CPU now (training may change the weights right after), written in the background
        future = dcp.async_save(state_dict, checkpoint_id=tmp / SHARDS, process_group=async_group())
        future = getattr(future, "upload_completion", future)  # an AsyncSaveResponse with async staging
    else:
        dcp.save(state_dict, checkpoint_id=tmp / SHARDS)
    seal_it = None
    if is_main():
        (tmp / CONFIG).mkdir()
        config = hf_config_dict(model.config, torch.float32)
        atomic_write(tmp / CONFIG / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / CONFIG)
        state = dict(train_state, step=step, rng=rng_state(), format=FORMAT_SHARDED)
        atomic_write(tmp / STATE, lambda p: torch.save(state, p))
        seal_it = lambda: seal(tmp, final, step, recipe, FORMAT_SHARDED, keep_last)  # noqa: E731
    if async_save:
        _pending = PendingSave(future, final, seal_it)
        return final
    if seal_it is not None:
        seal_it()
    barrier()
    return final


def seal(tmp: Path, final: Path, step: int, recipe: dict, fmt: str, keep_last: int) -> None:
    """Write recipe and manifest (last) into tmp, rename it to `final`, fsync, prune old checkpoints."""
    atomic_write(tmp / RECIPE, lambda p: p.write_text(json.dumps(recipe, indent=1)))
    files = {str(f.relative_to(tmp)): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
             for f in sorted(tmp.rglob("*")) if f.is_file()}
    manifest = {"format": fmt, "step": step, "files": files}
    atomic_write(tmp / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
    for folder in sorted({f.parent for f in tmp.rglob("*") if f.is_file()}):
        fsync_dir(folder)
    if final.exists():  # a re-save of the same step (e.g. SIGTERM right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    prune(final.parent.parent, keep_last)


def is_sharded(ckpt: Path) -> bool:
    return (ckpt / SHARDS).is_dir()


def load_sharded(ckpt: Path, model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
    """Load a sharded checkpoint into this run's (parallelized) model and optimisers: each rank reads
    the pieces of its own shards, whatever the saving world size was."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    model_state, optim_state = get_state_dict(model, optimizers)  # this run's layout, to be filled
    dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=ckpt / SHARDS, no_dist=not distributed())
    set_state_dict(model, optimizers, model_state_dict=model_state, optim_state_dict=optim_state)


def verify(ckpt: Path) -> str | None:
    """None if the checkpoint is complete and intact, else the reason it is not."""
    manifest_path = ckpt / MANIFEST
    if not manifest_path.exists():
        return "incomplete (no manifest.json: the write was interrupted)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError) as e:
        return f"corrupt manifest.json ({e})"
    for rel, info in files.items():
        f = ckpt / rel
        if not f.exists():
            return f"corrupt: {rel} is missing"
        if f.stat().st_size != info["bytes"]:
            return f"corrupt: {rel} has {f.stat().st_size} bytes, manifest says {info['bytes']}"
        if _sha256(f) != info["sha256"]:
            return f"corrupt: {rel} does not match its sha256 in the manifest"
    return None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = checkpoint_dir(run_dir)
    return sorted(p for p in root.glob("step_*") if p.is_dir()) if root.exists() else []


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest valid checkpoint; invalid newer ones are skipped with a warning that says why."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        warnings.warn(f"skipping checkpoint {ckpt}: {problem}", stacklevel=2)
    return None


def load_train_state(ckpt: Path) -> dict:
    state = torch.load(ckpt / STATE, map_location="cpu", weights_only=False)  # our own file, manifest-verified
    if state.get("format") not in (FORMAT, FORMAT_SHARDED):
        raise CheckpointError(f"{ckpt / STATE}: unknown format {state.get('format')!r}")
    return state


def load_recipe_dict(ckpt: Path) -> dict:
    return json.loads((ckpt / RECIPE).read_text())


def prune(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` valid checkpoints (and stale temporary folders)."""
    root = checkpoint_dir(run_dir)
    for tmp in root.glob(".tmp-step_*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)
    if keep_last < 1:
        return
    valid = [c for c in list_checkpoints(run_dir) if (c / MANIFEST).exists()]
    for old in valid[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
