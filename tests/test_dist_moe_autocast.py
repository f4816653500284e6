"""Under torch.autocast(bf16) the routed experts' grouped GEMMs run in bf16 (the residual stream is
fp32 and autocast does not cover the grouped GEMM, so the MoE casts at its entry); the router still
computes in fp32, and without autocast nothing changes."""

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.model import moe


@pytest.fixture
def gemm_dtypes(monkeypatch):
    """Record the (activation, weight) dtypes every grouped expert GEMM receives."""
    if not moe.HAS_GROUPED_MM:
        pytest.skip("this torch has no torch._grouped_mm (the per-expert fallback follows the same dtypes)")
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    real = moe._grouped_mm_op

    def recording(x, w, offsets):
        seen.append((x.dtype, w.dtype))
        return real(x, w, offsets)

    monkeypatch.setattr(moe, "_grouped_mm_op", recording)
    return seen


def routed_dtypes(monkeypatch) -> list[torch.dtype]:
    seen = []
    real = moe.Router.forward

    def recording(self, x):
        scores, idx, w = real(self, x)
        seen.append((scores.dtype, w.dtype))
        return scores, idx, w

    monkeypatch.setattr(moe.Router, "forward", recording)
    return seen


def test_experts_run_in_bf16_under_autocast(gemm_dtypes, monkeypatch):
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny")).train()
    model.init_weights(seed=0)
    router = routed_dtypes(monkeypatch)
    x = torch.randint(0, model.config.vocab_size, (2, 17))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x[:, :-1])
        loss, _ = model.loss(out, x[:, 1:])
    loss.backward()
    assert gemm_dtypes and set(gemm_dtypes) == {(torch.bfloat16, torch.bfloat16)}
    assert router and set(router) == {(torch.float32, torch.float32)}  # routing stays fp32
    experts = next(m for m in model.modules() if isinstance(m, moe.Experts))
    assert experts.gate_up_proj.dtype == torch.float32 and experts.gate_up_proj.grad.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(experts.gate_up_proj.grad).all()


def test_experts_stay_fp32_without_autocast(gemm_dtypes):
    model = KExaone(ModelConfig.preset("tiny"))
    model.init_weights(seed=0)
    model(torch.randint(0, model.config.vocab_size, (1, 8)))
    assert gemm_dtypes and set(gemm_dtypes) == {(torch.float32, torch.float32)}
