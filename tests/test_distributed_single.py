"""The distributed helpers in one process: they degrade to the single-process answer, reject bad
input clearly, and the expert-parallel module equals the local experts on a 1-rank group."""

import pytest
import torch
import torch.distributed as dist

from kexa import KExaone, ModelConfig
from kexa.model.moe import Experts
from kexa.train import dist as D
from kexa.train import parallel as P
from kexa.train.expert_parallel import ExpertParallelExperts, apply_expert_parallel


def test_without_torchrun_everything_is_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert P.init_distributed() is None
    with pytest.raises(ValueError, match="torchrun"):
        P.init_distributed(ep_size=2)
    assert (D.world_size(), D.rank(), D.is_main()) == (1, 0, True)
    assert D.any_rank(True) and not D.any_rank(False)
    t = torch.tensor([3.0])
    assert D.all_reduce_mean(t) is t and D.all_reduce_sum(t).item() == 3.0
    with D.main_process_first():
        pass
    model = KExaone(ModelConfig.preset("tiny"))
    assert P.parallelize(model, None, activation_checkpointing=True) is model and model.activation_checkpointing
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        P.parallelize(model, None, mixed_precision="fp8")
    with pytest.raises(RuntimeError, match="torchrun"):
        apply_expert_parallel(model, None)


def test_clip_grad_norm_matches_torch():
    torch.manual_seed(0)
    a, b = KExaone(ModelConfig.preset("tiny")), KExaone(ModelConfig.preset("tiny"))
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 512, (2, 16))
    for m in (a, b):
        m.loss(m(x[:, :-1]), x[:, 1:])[0].backward()
    ours = P.clip_grad_norm_(list(a.parameters()), 0.5)
    ref = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
    torch.testing.assert_close(ours, ref)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield torch.distributed.device_mesh.init_device_mesh("cpu", (1,), mesh_dim_names=("ep",))
    finally:
        P.cleanup()


def test_expert_parallel_module_equals_local_experts(one_rank_group):
    cfg = ModelConfig.preset("tiny")
    torch.manual_seed(0)
    local = Experts(cfg)
    torch.nn.init.normal_(local.gate_up_proj, std=0.1)
    torch.nn.init.normal_(local.down_proj, std=0.1)
    ep = ExpertParallelExperts(local, one_rank_group)
    x = torch.randn(20, cfg.hidden_size, requires_grad=True)
    idx = torch.stack([torch.randperm(cfg.num_experts)[:cfg.num_experts_per_tok] for _ in range(20)])
    w = torch.rand(20, cfg.num_experts_per_tok)
    out, counts = local(x, idx, w)
    out_ep, counts_ep = ep(x, idx, w)
    torch.testing.assert_close(out_ep, out)
    assert torch.equal(counts_ep, counts) and counts.sum() == 20 * cfg.num_experts_per_tok
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, local.gate_up_proj, local.down_proj], g)
    grads_ep = torch.autograd.grad(out_ep, [x, ep.gate_up_proj, ep.down_proj], g)
    for a, b in zip(grads_ep, grads):
        torch.testing.assert_close(a.full_tensor() if hasattr(a, "full_tensor") else a, b)
