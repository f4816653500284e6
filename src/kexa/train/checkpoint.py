"""Atomic training checkpoints: an HF model folder plus the full training state, manifest last.

    RUN/checkpoints/step_00000150/
        model/             model.save_pretrained(): config.json + safetensors (HF exaone_moe layout);
                           the expert biases are model buffers, so they are in here; plus the
                           tokenizer files when the run has a tokenizer (a complete model folder)
        train_state.pt     optimiser states, loader state, torch/python RNG, step and counters
        recipe.json        the recipe (compared on resume: `recipe.resume_mismatches`)
        manifest.json      written LAST: step, and the size + sha256 of every other file

A checkpoint is built in a hidden temporary folder beside its final name, every file fsynced, the
manifest written, the folder renamed into place and the parent fsynced (torch.distributed.checkpoint
also marks completeness with a final metadata file). Readers trust only folders whose manifest
exists and whose files match it: a folder without a manifest is an interrupted write (skipped with a
warning); a size or hash mismatch is corruption (skipped with a warning naming the file); if no
checkpoint is valid, resuming fails with `CheckpointError`. Keep-last-N prunes only after a new
checkpoint is complete, so the last good one always survives.

Distributed runs (FSDP2): gathering the full model and optimiser state is collective (every rank
calls `save_checkpoint`); only rank 0 writes. Single-process runs skip all of that.

    python -c "from kexa.train.checkpoint import latest_checkpoint; print(latest_checkpoint('runs/tiny'))"
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..model.hf import CheckpointError, atomic_write, fsync_dir
from ..model.transformer import KExaone
from .lora import mirror_lora

MANIFEST, STATE, RECIPE, MODEL = "manifest.json", "train_state.pt", "recipe.json", "model"
FORMAT = "kexa-train-checkpoint-v1"


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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


def full_states(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> tuple[nn.Module | None, list]:
    """(a plain model holding the full weights, optimiser state dicts) on rank 0; (None, []) elsewhere."""
    if not distributed():
        return model, [opt.state_dict() for opt in optimizers]
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    from .parallel import full_state_dict
    weights = full_state_dict(model)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    optim = [get_optimizer_state_dict(model, opt, options=opts) for opt in optimizers]
    if dist.get_rank() != 0:
        return None, []
    with torch.device("meta"):  # a storage-less twin (with the model's LoRA adapters, if any); tensors are assigned
        plain = mirror_lora(model, KExaone(model.config))
    plain.load_state_dict(weights, assign=True)
    return plain, optim


def load_optimizer_states(model: nn.Module, optimizers: list[torch.optim.Optimizer], states: list) -> None:
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
                    train_state: dict, recipe: dict, keep_last: int = 2, tokenizer=None) -> Path | None:
    """Write RUN/checkpoints/step_N atomically (collective when distributed; rank 0 writes). Returns its path."""
    plain, optim_states = full_states(model, optimizers)
    root = checkpoint_dir(run_dir)
    final = root / f"step_{step:08d}"
    if plain is not None:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        plain.save_pretrained(tmp / MODEL)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / MODEL)
        state = dict(train_state, step=step, optimizers=optim_states, rng=rng_state(), format=FORMAT)
        atomic_write(tmp / STATE, lambda p: torch.save(state, p))
        atomic_write(tmp / RECIPE, lambda p: p.write_text(json.dumps(recipe, indent=1)))
        files = {str(f.relative_to(tmp)): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
                 for f in sorted(tmp.rglob("*")) if f.is_file()}
        manifest = {"format": FORMAT, "step": step, "files": files}
        atomic_write(tmp / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
        fsync_dir(tmp / MODEL)
        fsync_dir(tmp)
        if final.exists():  # a re-save of the same step (e.g. SIGTERM right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        prune(run_dir, keep_last)
    if distributed():
        dist.barrier()
    return final


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
    if state.get("format") != FORMAT:
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
