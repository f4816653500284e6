"""Async sharded checkpoints (`train.async_checkpoint`, dcp.async_save): a save returns before its
shards are written, its step folder appears only once the write is complete and sealed, a resume from
an async checkpoint reproduces the uninterrupted losses bitwise, and a save still in flight when the
processes die is never taken as the latest checkpoint.

    .venv/bin/python -m pytest -m dist tests/test_dist_async_checkpoint.py     (2 gloo ranks)
    .venv/bin/python -m pytest tests/test_dist_async_checkpoint.py -m "not dist"   (the sealing rule alone)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = ["train.steps=4", "data.batch_size=2", "train.plot=false", "train.keep_last=4"]


def worker(tmp: Path, mode: str) -> None:
    """mode "crash": a reference run (4 steps, async saves at 2 and 4), then a run saving every step that
    dies (os._exit on every rank) at step 3 with its step-2 save in flight. mode "resume": resume that
    run to step 4."""
    from kexa.data.shards import TokenShards
    from kexa.train import checkpoint as ckpt
    from kexa.train import dist as D
    from kexa.train import parallel as P
    from kexa.train.loop import TrainData, train
    from kexa.train.recipe import load_recipe
    from test_train_loop import BASE

    data = TrainData({"seq": TokenShards(tmp / "data" / "train")}, {"seq": TokenShards(tmp / "data" / "heldout")})
    if mode == "resume":
        b = train(load_recipe(None, BASE + STEPS + ["train.save_every=1"]), tmp / "crash", data, resume=True,
                  quiet=True)
        if D.is_main():
            (tmp / "resumed.json").write_text(json.dumps([m["loss"] for m in b.history]))
        P.cleanup()
        return

    seen = []  # (step, a save is in flight, its step folder exists) right after each save call returns
    save = ckpt.save_checkpoint

    def watched(run_dir, step, *args, **kw):
        final = save(run_dir, step, *args, **kw)
        seen.append((step, ckpt.pending_save() is not None, final.exists()))
        return final

    ckpt.save_checkpoint = watched  # the loop calls ckpt.save_checkpoint
    a = train(load_recipe(None, BASE + STEPS + ["train.save_every=2"]), tmp / "ref", data, quiet=True)
    sealed = sorted(p.name for p in ckpt.list_checkpoints(tmp / "ref"))
    if D.is_main():
        (tmp / "ref.json").write_text(json.dumps({"losses": [m["loss"] for m in a.history], "seen": seen,
                                                  "sealed_at_return": sealed}))
    D.barrier()

    ckpt.poll_pending = lambda: None  # seal only when the next save (or the end) waits: step 2 stays in flight

    def die(m):
        if m["step"] == 3:  # step 2's save was started and not waited for; step 1's was sealed by it
            (tmp / f"died_{D.rank()}.json").write_text(json.dumps({"pending": str(ckpt.pending_save().final)}))
            os._exit(0)

    train(load_recipe(None, BASE + STEPS + ["train.save_every=1"]), tmp / "crash", data, quiet=True, on_step=die)


def torchrun(tmp: Path, mode: str) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(tmp),
           mode]
    with open(tmp / f"log_{mode}.txt", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=400)
    assert proc.returncode == 0, f"torchrun failed:\n{(tmp / f'log_{mode}.txt').read_text()[-8000:]}"


@pytest.mark.dist
def test_async_saves_resume_bitwise_and_an_unfinished_save_is_never_latest(tmp_path):
    from test_train_loop import synthetic_data

    from kexa.train import checkpoint as ckpt

    synthetic_data(tmp_path / "data")
    torchrun(tmp_path, "crash")
    ref = json.loads((tmp_path / "ref.json").read_text())
    # the periodic save returned with its write in flight and no step folder yet; the final one too
    # (train waits for it before returning), so both were sealed by the time train returned
    assert ref["seen"] == [[2, True, False], [4, True, False]]
    assert ref["sealed_at_return"] == ["step_00000002", "step_00000004"]
    for name in ref["sealed_at_return"]:
        assert ckpt.verify(tmp_path / "ref" / "checkpoints" / name) is None

    crash = tmp_path / "crash" / "checkpoints"
    died = [json.loads((tmp_path / f"died_{r}.json").read_text()) for r in range(2)]
    assert all(d["pending"].endswith("step_00000002") for d in died)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "crash")] == ["step_00000001"]
    assert (crash / ".tmp-step_00000002-sharded").is_dir()  # the unsealed write, whatever it got to
    assert ckpt.latest_checkpoint(tmp_path / "crash") == crash / "step_00000001"

    torchrun(tmp_path, "resume")  # from step 1 (async saves again): steps 2-4 as the reference computed them
    assert json.loads((tmp_path / "resumed.json").read_text()) == ref["losses"][1:]
    assert not (crash / ".tmp-step_00000002-sharded").exists()  # replaced by the resumed step-2 save, sealed
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "crash")][-1] == "step_00000004"


def test_a_pending_save_is_sealed_only_after_its_write_completes(tmp_path, monkeypatch):
    """The sealing rule without processes: poll leaves an unfinished write alone, seals a finished one;
    a failed write raises one CheckpointError and is never sealed."""
    from kexa.model.hf import CheckpointError
    from kexa.train import checkpoint as ckpt

    sealed = []
    future = Future()
    monkeypatch.setattr(ckpt, "_pending", ckpt.PendingSave(future, tmp_path / "step_00000007", lambda: sealed.append(7)))
    ckpt.poll_pending()
    assert sealed == [] and ckpt.pending_save() is not None  # still writing: nothing sealed, still pending
    future.set_result(None)
    ckpt.poll_pending()
    assert sealed == [7] and ckpt.pending_save() is None
    assert ckpt.wait_pending() is None  # nothing in flight any more

    failed = Future()
    failed.set_exception(OSError("disk full"))
    monkeypatch.setattr(ckpt, "_pending", ckpt.PendingSave(failed, tmp_path / "step_00000008", lambda: sealed.append(8)))
    with pytest.raises(CheckpointError, match="async checkpoint step_00000008 failed while writing: disk full"):
        ckpt.wait_pending()
    assert sealed == [7] and ckpt.pending_save() is None


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2])
