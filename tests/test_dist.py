"""kexa.train.dist: the reductions through a real 2-rank gloo group, and the device rule (a
collective receives its tensor on the process group's device: CUDA under NCCL), checked with a
mocked NCCL group on fake CUDA tensors so a CPU-only machine catches a regression."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch._subclasses.fake_tensor import FakeTensorMode

from kexa.train import dist as D


def _gloo_worker(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as tdist
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        r = float(rank)
        results = {
            "rank_world_main": [D.rank(), D.world_size(), D.is_main(), D.distributed()],
            "device": str(D.group_device()),
            "sum": D.all_reduce_sum(torch.tensor([r + 1, 10.0], dtype=torch.float64)).tolist(),
            "sum_int": D.all_reduce_sum(torch.tensor([rank + 1])).tolist(),
            "mean": D.all_reduce_mean(torch.tensor([r, 2 * r])).tolist(),
            "max": D.all_reduce_max(torch.tensor([r, -r])).tolist(),
            "any_one": D.any_rank(rank == 1),
            "any_none": D.any_rank(False),
            "broadcast": D.broadcast(torch.tensor([r + 5]), src=1).tolist(),
        }
        with D.main_process_first():
            pass
        D.barrier()
        with open(f"{out}.{rank}", "w") as f:
            json.dump(results, f)
    finally:
        tdist.destroy_process_group()


def test_reductions_through_a_gloo_group(tmp_path):
    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        mp.start_processes(_gloo_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2,
                           start_method="spawn")
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
    got = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    for rank, res in enumerate(got):
        assert res["rank_world_main"] == [rank, 2, rank == 0, True]
        assert res["device"] == "cpu"  # gloo reduces CPU tensors
        assert res["sum"] == [3.0, 20.0] and res["sum_int"] == [3]
        assert res["mean"] == [0.5, 1.0]
        assert res["max"] == [1.0, 0.0]
        assert res["any_one"] is True and res["any_none"] is False
        assert res["broadcast"] == [6.0]


def test_single_process_answers_without_a_group():
    assert (D.rank(), D.world_size(), D.is_main(), D.distributed()) == (0, 1, True, False)
    t = torch.tensor([2.0, 4.0])
    assert D.all_reduce_sum(t) is t and D.all_reduce_mean(t) is t and D.all_reduce_max(t) is t
    assert t.tolist() == [2.0, 4.0] and D.any_rank(True) and not D.any_rank(False)
    assert D.broadcast(t) is t


@pytest.fixture
def nccl_like_group(monkeypatch):
    """Pretend a 2-rank NCCL group exists: every collective records the devices it receives and,
    like NCCL, rejects a CPU tensor."""
    seen: list[tuple[str, str]] = []

    def collective(name):
        def run(tensor, *args, **kwargs):
            if tensor.device.type != "cuda":
                raise RuntimeError(f"NCCL: {name} got a tensor on {tensor.device}")  # what NCCL does
            seen.append((name, str(tensor.device)))
        return run

    tdist = D.dist
    monkeypatch.setattr(tdist, "is_available", lambda: True)
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    monkeypatch.setattr(tdist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(tdist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(tdist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(tdist, "all_reduce", collective("all_reduce"))
    monkeypatch.setattr(tdist, "broadcast", collective("broadcast"))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return seen


def test_collectives_move_cpu_tensors_to_the_nccl_device(nccl_like_group):
    assert D.group_device() == torch.device("cuda", 0)
    # fake tensors: "cuda" tensors without a GPU; a CPU tensor handed to the helpers must reach the
    # collective on cuda:0 and the result must land back in the caller's CPU tensor
    with FakeTensorMode(allow_non_fake_inputs=True):
        counts = torch.zeros(2, 3, dtype=torch.float64)  # the trainer's CPU bookkeeping
        assert D.all_reduce_sum(counts) is counts and counts.device.type == "cpu"
        assert D.all_reduce_max(torch.zeros(3)).device.type == "cpu"
        assert D.all_reduce_mean(torch.zeros(3)).device.type == "cpu"
        assert D.broadcast(torch.zeros(3), src=0).device.type == "cpu"
        already = torch.zeros(4, device="cuda:0")  # a tensor already on the group's device is reduced in place
        assert D.all_reduce_sum(already) is already
    assert nccl_like_group == [("all_reduce", "cuda:0")] * 3 + [("broadcast", "cuda:0"), ("all_reduce", "cuda:0")]


def test_trainer_helpers_use_the_device_rule(nccl_like_group):
    """The callers of collectives elsewhere in kexa go through dist.py, so they obey the rule too."""
    from kexa.train import balance
    with FakeTensorMode(allow_non_fake_inputs=True):
        loads = torch.zeros(2, 8)
        assert balance.all_reduce_loads(loads).device.type == "cpu"
    assert nccl_like_group == [("all_reduce", "cuda:0")]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
