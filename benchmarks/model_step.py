"""Training-step and forward throughput: kexa vs transformers' ExaoneMoeForCausalLM, same weights.

Both models get the same `nano` config (MTP disabled: transformers has none), the same weights
(kexa loads the folder transformers saved), the same batch and dtype. Measurements alternate
between the two models in one run; we report medians over --reps and the kexa/HF ratio, plus the
fraction of this machine's measured matmul rate that each step reaches (model FLOPs / time).

    .venv/bin/python benchmarks/model_step.py                  # fp32 + bf16 autocast, fwd+bwd and fwd
    .venv/bin/python benchmarks/model_step.py --reps 7 --batch 8 --seq 256 --experts-impl eager

Written to benchmarks/results/model_step.json (--out to change).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from _results import write_result

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def step_flops(cfg, tokens_per_seq: int, batch: int, backward: bool) -> float:
    """Matmul FLOPs of one step: 2 x active matmul params per token (x3 with backward) + attention."""
    from kexa.info import parameter_counts
    c = parameter_counts(cfg)
    norms = cfg.hidden_size * (2 * cfg.num_hidden_layers + 1) + 2 * cfg.head_dim * cfg.num_hidden_layers
    matmul_params = c["active_params"] - norms
    T = tokens_per_seq
    attn = 0.0
    for i in range(cfg.num_hidden_layers):  # QK^T and AV, causal: mean visible keys per query
        keys = min(cfg.sliding_window, (T + 1) / 2) if cfg.is_sliding(i) else (T + 1) / 2
        attn += 2 * 2 * cfg.num_attention_heads * cfg.head_dim * keys
    per_token = 2 * matmul_params + attn
    return per_token * T * batch * (3 if backward else 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--experts-impl", default=None, help="transformers experts_implementation (default: its own)")
    ap.add_argument("--modes", default="fp32-train,fp32-fwd,bf16-train,bf16-fwd")
    ap.add_argument("--out", default="model_step", help="result name or .json path")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import ExaoneMoeConfig, ExaoneMoeForCausalLM
    from kexa import KExaone, ModelConfig

    cfg = ModelConfig.preset(args.preset).replace(num_nextn_predict_layers=0)
    torch.manual_seed(0)
    kw = {"experts_implementation": args.experts_impl} if args.experts_impl else {}
    hf = ExaoneMoeForCausalLM(ExaoneMoeConfig(**cfg.to_hf()))
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        hf = ExaoneMoeForCausalLM.from_pretrained(d, dtype=torch.float32, **kw)
        kx = KExaone.from_pretrained(d, dtype=torch.float32)
    impl = getattr(hf.config, "_experts_implementation", None)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    labels = torch.roll(x, -1, 1)

    def hf_step(train: bool):
        if train:
            out = hf(input_ids=x, labels=labels)
            out.loss.backward()
        else:
            with torch.no_grad():
                hf(input_ids=x)

    def kx_step(train: bool):
        if train:
            loss, _ = kx.loss(kx(x), labels)
            loss.backward()
        else:
            with torch.no_grad():
                kx(x)

    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16, n=256, reps=2)}
    modes = args.modes.split(",")
    if peak["bf16"] < 0.2 * peak["fp32"]:
        # CPUs without AVX512-BF16/AMX run bf16 GEMMs on a slow reference path (seen: 2048^3 in
        # ~170 s on an AVX2-only EPYC); a bf16 step would take hours. Say so instead of hanging.
        print(f"WARNING: bf16 matmul runs at {peak['bf16']:.1f} GFLOP/s here (no native bf16 on this CPU): "
              "skipping the bf16 modes")
        modes = [m for m in modes if not m.startswith("bf16")]
    print(f"preset {args.preset}  batch {args.batch} x seq {args.seq}  threads {args.threads}  "
          f"transformers experts_implementation={impl}")
    print(f"measured matmul rate: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    print(f"{'mode':<12}{'kexa tok/s':>12}{'HF tok/s':>12}{'ratio':>8}{'kexa %peak':>12}{'HF %peak':>10}")
    tokens = args.batch * args.seq
    result = {"args": vars(args), "hf_experts_implementation": impl, "matmul_gflops": peak, "modes": {}}
    for mode in modes:
        dtype, kind = mode.split("-")
        train = kind == "train"
        for m in (hf, kx):
            m.train(train)
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else torch.enable_grad
        times = {"kexa": [], "hf": []}
        for rep in range(args.reps + 1):  # first round is warm-up
            for name, fn in (("hf", hf_step), ("kexa", kx_step)) if rep % 2 else (("kexa", kx_step), ("hf", hf_step)):
                for m in (hf, kx):
                    m.zero_grad(set_to_none=True)
                with ctx():
                    t = time.perf_counter()
                    fn(train)
                    dt = time.perf_counter() - t
                if rep:
                    times[name].append(dt)
        k, h = statistics.median(times["kexa"]), statistics.median(times["hf"])
        flops = step_flops(cfg, args.seq, args.batch, train)
        print(f"{mode:<12}{tokens / k:>12.0f}{tokens / h:>12.0f}{h / k:>8.2f}"
              f"{100 * flops / k / 1e9 / peak[dtype]:>11.1f}%{100 * flops / h / 1e9 / peak[dtype]:>9.1f}%", flush=True)
        result["modes"][mode] = {"kexa_tok_s": tokens / k, "hf_tok_s": tokens / h, "ratio": h / k,
                                 "kexa_s": times["kexa"], "hf_s": times["hf"]}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
