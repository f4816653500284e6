"""Muon (batched Newton-Schulz, update scale, parameter split), AdamW-only recipes, WSD schedule."""

import math

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.train.optim import Muon, OptimConfig, build_optimizers, newton_schulz, split_params
from kexa.train.schedule import WSD, set_lr



def test_newton_schulz_orthogonalises_each_matrix_of_a_stack():
    g = torch.randn(6, 48, 24, generator=torch.Generator().manual_seed(0))
    o = newton_schulz(g)
    sv = torch.linalg.svdvals(o)  # (6, 24)
    # the quintic iteration lands singular values in a band around 1, not exactly 1 (reference §2.1)
    assert sv.min() > 0.5 and sv.max() < 1.25
    per_matrix = torch.stack([newton_schulz(m) for m in g])
    torch.testing.assert_close(o, per_matrix)  # batched == one expert at a time
    # the polar factor's direction: <O, G> > 0 and O is close to U V^T
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = (o * (u @ vh)).sum((-2, -1)) / (o.norm(dim=(-2, -1)) * (u @ vh).norm(dim=(-2, -1)))
    assert (cos > 0.95).all()


def test_muon_step_matches_the_formula_including_nesterov_and_decay():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 8, 16))
    w0 = w.detach().clone()
    opt = Muon([w], lr=0.01, weight_decay=0.1, momentum=0.95)
    g1, g2 = torch.randn(4, 8, 16), torch.randn(4, 8, 16)
    w.grad = g1.clone()
    opt.step()
    buf = 0.05 * g1
    expected = w0 * (1 - 0.01 * 0.1) - 0.01 * 0.2 * math.sqrt(16) * newton_schulz(g1.lerp(buf, 0.95))
    torch.testing.assert_close(w.detach(), expected)
    w.grad = g2.clone()
    opt.step()
    buf = 0.95 * buf + 0.05 * g2
    expected = expected * (1 - 0.001) - 0.01 * 0.8 * newton_schulz(0.05 * g2 + 0.95 * buf)
    torch.testing.assert_close(w.detach(), expected)


def test_muon_update_rms_matches_adamw_scale():
    # Moonlight: 0.2 sqrt(max(A, B)) O has RMS ~0.2 for a full-rank square-ish O (RMS of O ~ 1/sqrt(max))
    o = newton_schulz(torch.randn(256, 64))
    rms = (Muon.update_scale(o.shape) * o).pow(2).mean().sqrt()
    assert 0.1 < float(rms) < 0.3


def test_muon_rejects_vectors_and_row_blocks_that_do_not_divide():
    with pytest.raises(ValueError, match=">= 2 dims"):
        Muon([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="row_blocks=3"):
        Muon([{"params": [torch.nn.Parameter(torch.zeros(2, 8, 4))], "row_blocks": 3}])


def test_fused_gate_up_halves_are_separate_muon_matrices():
    """A (E, 2I, C) stack with row_blocks=2 steps exactly as two (E, I, C) stacks would: the gate
    half's update ignores the up half's gradient, and the scale uses (I, C) (here 0.2 sqrt(16), not
    0.2 sqrt(32))."""
    E, I, C = 3, 16, 8
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(E, 2 * I, C, generator=gen)
    grads = [torch.randn(E, 2 * I, C, generator=gen) for _ in range(2)]

    def run(w_init, gs, row_blocks):
        w = torch.nn.Parameter(w_init.clone())
        opt = Muon([{"params": [w], "row_blocks": row_blocks}], lr=0.01, weight_decay=0.1)
        for g in gs:
            w.grad = g.clone()
            opt.step()
        return w.detach()

    fused = run(w0, grads, 2)
    other_up = run(w0, [torch.cat([g[:, :I], 5 * g[:, I:].flip(1)], 1) for g in grads], 2)
    torch.testing.assert_close(fused[:, :I], other_up[:, :I], rtol=0, atol=0)  # gate: up grad irrelevant
    assert not torch.allclose(fused[:, I:], other_up[:, I:])
    for half in (slice(0, I), slice(I, 2 * I)):  # each half == its own Muon matrix stack
        torch.testing.assert_close(fused[:, half], run(w0[:, half], [g[:, half] for g in grads], 1))
    # one (2I, C) matrix per expert (the old behaviour) couples the halves
    other_up_coupled = run(w0, [torch.cat([g[:, :I], 5 * g[:, I:]], 1) for g in grads], 1)
    assert not torch.allclose(run(w0, grads, 1)[:, :I], other_up_coupled[:, :I])


def test_parameter_split_puts_router_embeddings_head_and_norms_on_adamw():
    model = KExaone(ModelConfig.preset("tiny"))
    muon, decay, no_decay = split_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    blocks = {names[id(p)]: g["row_blocks"] for g in muon for p in g["params"]}
    decay_names = {names[id(p)] for p in decay}
    assert blocks["model.layers.1.mlp.experts.gate_up_proj"] == 2  # 3-D expert stack on Muon, gate/up apart
    assert blocks["model.layers.1.mlp.experts.down_proj"] == 1
    assert blocks["model.layers.0.self_attn.q_proj.weight"] == 1
    assert blocks["mtp.fc.weight"] == 1
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight"} <= decay_names
    assert all(p.ndim == 1 for p in no_decay)
    assert len(blocks) + len(decay) + len(no_decay) == len(list(model.parameters()))


def test_adamw_recipe_has_no_muon_and_all_groups_follow_the_schedule():
    model = KExaone(ModelConfig.preset("tiny"))
    opts = build_optimizers(model, OptimConfig(name="adamw", lr=1e-3))
    assert [type(o) for o in opts] == [torch.optim.AdamW]
    opts = build_optimizers(model, OptimConfig(name="muon", lr=1e-3))
    assert [type(o) for o in opts] == [Muon, torch.optim.AdamW]
    set_lr(opts, 0.5)
    assert all(g["lr"] == 5e-4 for o in opts for g in o.param_groups)
    with pytest.raises(ValueError, match="optim.name"):
        OptimConfig(name="sgd")


def test_wsd_shapes():
    s = WSD(warmup=0.1, decay=0.2, shape="linear")
    f = [s.factor(i, 100) for i in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(x == 1.0 for x in f[10:80])
    assert f[-1] == pytest.approx(0.0) and f[89] == pytest.approx(0.5)
    sqrt_f = [WSD(0.1, 0.2, "1-sqrt").factor(i, 100) for i in range(100)]
    cos_f = [WSD(0.1, 0.2, "cosine").factor(i, 100) for i in range(100)]
    assert sqrt_f[84] < f[84] < cos_f[84]  # 1-sqrt cools fastest early, cosine slowest
    assert all(a >= b for a, b in zip(f[80:], f[81:]))  # monotone decay
    assert WSD(0.0, 0.5, "linear", min_lr_ratio=0.1).factor(99, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="shape"):
        WSD(shape="exp")
    with pytest.raises(ValueError, match="warmup \\+ schedule.decay"):
        WSD(warmup=0.6, decay=0.6)


def test_orthogonalize_dtensor_paths_match_plain_tensors(tmp_path):
    """Both FSDP2 code paths (shard-local for expert stacks, gather for row-sharded matrices) on a
    one-rank gloo mesh; the two-rank runs live in tests/test_distributed.py."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from kexa.train.optim import newton_schulz_blocks, orthogonalize

    if dist.is_initialized():
        pytest.skip("a process group already exists")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        stack, matrix = torch.randn(4, 16, 8), torch.randn(16, 8)
        for t, dim, blocks in ((stack, 0, 1), (matrix, 0, 1), (matrix, 1, 1), (stack, 0, 2), (matrix, 0, 2)):
            d = orthogonalize(distribute_tensor(t, mesh, [Shard(dim)]), steps=5, row_blocks=blocks)
            assert d.placements == (Shard(dim),)
            torch.testing.assert_close(d.full_tensor(), newton_schulz_blocks(t, 5, blocks))
    finally:
        dist.destroy_process_group()
