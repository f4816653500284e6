"""Numerics of FP8 routed experts (model/fp8.py) by CPU emulation: relative Frobenius errors, no speed.

1. One grouped GEMM (rows sorted over 8 experts, one empty, 64 -> 96): output, input gradient and weight
   gradient of bf16, emulated FP8 and the per-expert torch._scaled_mm path (it runs on CPU), against fp32.
2. The tiny model under bf16 autocast, seeds 0-2: logits and gradients with FP8 experts against bf16
   experts (and bf16 against fp32 for scale).
These are the figures tests/test_fp8_experts.py bounds and docs/training.md quotes. Seconds on one core:

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fp8_experts_numerics.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from _results import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_fp8_experts import forward_backward, rel, run, sorted_problem, tiny_model  # noqa: E402

from kexa.model import fp8  # noqa: E402


def gemm() -> dict:
    x, w, counts, offsets, grad = sorted_problem()
    ref = run(x, w, counts, offsets, grad, None, torch.float32)
    cases = {"bf16": (None, torch.bfloat16), "fp8_emulated_bf16": ("emulate", torch.bfloat16),
             "fp8_emulated_fp32": ("emulate", torch.float32), "fp8_scaled_mm_fp32": ("scaled_mm", torch.float32)}
    out = {"rows": int(counts.sum()), "experts": len(counts), "in": x.shape[1], "out": w.shape[1]}
    for name, (backend, dtype) in cases.items():
        got = run(x, w, counts, offsets, grad, backend, dtype)
        out[name] = {k: round(rel(g, r), 5) for k, g, r in zip(("output", "grad_x", "grad_w"), got, ref)}
    return out


def model(seed: int) -> dict:
    m = tiny_model(seed)
    ids = torch.randint(0, m.config.vocab_size, (2, 33), generator=torch.Generator().manual_seed(seed + 1))
    logits_bf16, grads_bf16 = forward_backward(m, ids)
    fp8.convert_experts(m, "emulate")
    logits_fp8, grads_fp8 = forward_backward(m, ids)
    experts = [rel(grads_fp8[n], grads_bf16[n]) for n in grads_bf16 if ".experts." in n]
    routers = [rel(grads_fp8[n], grads_bf16[n]) for n in grads_bf16 if n.endswith("mlp.gate.weight")]
    return {"seed": seed, "logits": round(rel(logits_fp8, logits_bf16), 5),
            "lm_head_grad": round(rel(grads_fp8["lm_head.weight"], grads_bf16["lm_head.weight"]), 5),
            "expert_grads_min_max": [round(min(experts), 5), round(max(experts), 5)],
            "router_grads_min_max": [round(min(routers), 5), round(max(routers), 5)]}


def main() -> None:
    torch.set_num_threads(1)
    result = {"what": "relative Frobenius error, CPU emulation of FP8 expert GEMMs (e4m3, rowwise power-of-2 "
                      "scales, torchao's FP8 rowwise grouped recipe)",
              "grouped_gemm_vs_fp32": gemm(),
              "tiny_model_fp8_vs_bf16_experts": [model(s) for s in (0, 1, 2)]}
    path = write_result("fp8_experts_numerics", result)
    print(path.read_text())


if __name__ == "__main__":
    main()
