"""Decode throughput: kexa's engine vs transformers `generate()` on the same weights, batch 1, greedy.

Both sides get the `nano` config (random weights; MTP off: transformers has none), the same prompt
and 128 new tokens with no stop token, fp32. Runs alternate between kexa, HF with its default
experts implementation, HF with `experts_implementation="eager"` (its per-expert Python loop) and
HF at its fastest documented setting - a static KV cache (`cache_implementation="static"`) with
`torch.compile` on the forward (transformers' "LLM optimization" recipe) - plus kexa's compiled
decode step (`Engine(compile=True)`); both compiled sides are compiled once before timing (compile
times printed apart), all in one process; we print medians over --reps and kexa/HF ratios, and
check that greedy outputs agree. `--no-hf-compile` skips the compiled peer (its compilation takes
minutes on a busy CPU).

Memory-bandwidth ceiling: a batch-1 decode step must read every weight it touches once
(embedding row, attention and norms of every layer, the dense layer-0 MLP, router + top-k routed +
shared experts of every MoE layer, the final norm and the lm_head) -> bytes/token; divided into the
measured copy bandwidth (bytes read + written per second by a 256 MB tensor copy) it bounds
tokens/s. We print kexa's fraction of that bound. Note the shared, busy 2-core machine: absolute
numbers move with other people's load; the alternating ratios are what we trust.

    .venv/bin/python benchmarks/decode.py                    # nano, 128 tokens, 3 reps, 2 threads
    .venv/bin/python benchmarks/decode.py --reps 5 --threads 1 --json benchmarks/results/decode.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from _results import write_result

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def copy_bandwidth(mb: int = 256, reps: int = 5) -> float:
    """Bytes per second moved by a large tensor copy, counting the read and the write."""
    src = torch.empty(mb * 2**20 // 4, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t)
    return 2 * src.numel() * 4 / statistics.median(times)


def bytes_per_decode_token(cfg, dtype_bytes: int = 4) -> int:
    """Weights read by one batch-1 decode step (the active parameters; the embedding table is one row)."""
    from kexa.info import parameter_counts

    c = parameter_counts(cfg)
    return (c["active_params"] + cfg.hidden_size) * dtype_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--no-hf-compile", action="store_true", help="skip HF static cache + torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import ExaoneMoeConfig, ExaoneMoeForCausalLM
    from kexa import KExaone, ModelConfig
    from kexa.infer import Engine, SamplingParams

    cfg = ModelConfig.preset(args.preset).replace(num_nextn_predict_layers=0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        ExaoneMoeForCausalLM(ExaoneMoeConfig(**cfg.to_hf())).save_pretrained(d)
        hf_models = {"hf-default": ExaoneMoeForCausalLM.from_pretrained(d, dtype=torch.float32).eval(),
                     "hf-eager": ExaoneMoeForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                                       experts_implementation="eager").eval()}
        if not args.no_hf_compile:  # static cache + compiled forward: what transformers documents as fastest
            m = ExaoneMoeForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
            m.generation_config.cache_implementation = "static"
            m.forward = torch.compile(m.forward)
            hf_models["hf-static-compiled"] = m
        kx = KExaone.from_pretrained(d, dtype=torch.float32)
    impls = {name: m.config._experts_implementation for name, m in hf_models.items()}
    engines = {"kexa": Engine(kx), "kexa-compiled": Engine(kx, compile=True)}
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1))
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)
    outputs = {}

    def run_kexa(name):
        outputs[name] = engines[name].generate([prompt[0].tolist()], params).token_ids[0]

    def run_hf(name):
        m = hf_models[name]
        with torch.no_grad():
            out = m.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
        outputs[name] = out[0, args.prompt_tokens:].tolist()

    runners = {**{n: (lambda n=n: run_kexa(n)) for n in engines}, **{n: (lambda n=n: run_hf(n)) for n in hf_models}}
    times = {n: [] for n in runners}
    cpu = {n: [] for n in runners}  # process CPU time: less sensitive than wall time to other users' load
    order = list(runners)
    compile_s = {}
    for name in [n for n in ("kexa-compiled", "hf-static-compiled") if n in runners]:
        t = time.perf_counter()
        runners[name]()  # the one-time trace + C++ build, reported apart
        compile_s[name] = time.perf_counter() - t
    for rep in range(args.reps + 1):  # round 0 warms up
        for name in (order if rep % 2 == 0 else order[::-1]):
            t, c = time.perf_counter(), time.process_time()
            runners[name]()
            if rep:
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    tok_s = {n: args.new_tokens / statistics.median(ts) for n, ts in times.items()}
    cpu_tok_s = {n: args.new_tokens / statistics.median(ts) for n, ts in cpu.items()}
    bw = copy_bandwidth()
    per_tok = bytes_per_decode_token(cfg)
    ceiling = bw / per_tok
    agree = {n: sum(a == b for a, b in zip(outputs["kexa"], outputs[n])) for n in runners if n != "kexa"}

    print(f"preset {args.preset}, batch 1, prompt {args.prompt_tokens}, {args.new_tokens} new tokens, greedy, fp32, "
          f"threads {args.threads}, {args.reps} alternating reps (medians)")
    impls |= {"kexa": "grouped_mm (kexa)", "kexa-compiled": "per-assignment"}
    if "hf-static-compiled" in impls:
        impls["hf-static-compiled"] += " (static cache, compiled)"
    print(f"{'engine':<20}{'experts impl':<36}{'tok/s':>8}{'kexa/x':>8}{'compiled/x':>11}{'tok/cpu-s':>11}"
          f"{'compiled/x':>11}{'greedy = kexa':>15}")
    for n in runners:
        ag = f"{agree[n]}/{args.new_tokens}" if n in agree else "-"
        print(f"{n:<20}{impls[n]:<36}{tok_s[n]:>8.1f}{tok_s['kexa'] / tok_s[n]:>8.2f}{tok_s['kexa-compiled'] / tok_s[n]:>11.2f}"
              f"{cpu_tok_s[n]:>11.1f}{cpu_tok_s['kexa-compiled'] / cpu_tok_s[n]:>11.2f}{ag:>15}")
    print("one-time compilation (first request), excluded from tok/s: "
          + ", ".join(f"{n} {s:.0f} s" for n, s in compile_s.items()))
    print(f"copy bandwidth {bw / 1e9:.1f} GB/s (read+write); weights touched per token {per_tok / 1e6:.1f} MB "
          f"-> ceiling {ceiling:.0f} tok/s; kexa reaches {100 * tok_s['kexa'] / ceiling:.1f}%, "
          f"kexa-compiled {100 * tok_s['kexa-compiled'] / ceiling:.1f}%")
    if args.json:
        write_result(args.json, {
            "args": vars(args), "tokens_per_s": tok_s, "tokens_per_cpu_s": cpu_tok_s, "experts_implementation": impls,
            "ratio_kexa_compiled_to": {n: tok_s["kexa-compiled"] / v for n, v in tok_s.items()},
            "ratio_kexa_to": {n: tok_s["kexa"] / v for n, v in tok_s.items()},
            "greedy_agreement_with_kexa": agree, "compile_s": compile_s, "copy_bandwidth_Bps": bw,
            "bytes_per_token": per_tok, "ceiling_tokens_per_s": ceiling, "wall_s": times, "cpu_s": cpu})


if __name__ == "__main__":
    main()
