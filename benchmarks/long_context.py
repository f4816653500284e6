"""Long context: KV-cache bytes, chunked-prefill time and peak memory at 4K / 16K / 64K tokens,
K-EXAONE's hybrid layout (3 sliding : 1 global, ring of W slots) vs the same network with every
layer global (a full-attention cache).

`nano` shapes, random weights, fp32, batch 1. Each (layout, length) runs in a fresh child process so
its peak RSS (ru_maxrss) is its own; we print the cache bytes the KVCache allocated, the analytic
figure (global layers x tokens + sliding layers x W), the peak-RSS growth over the loaded model, and
what prefill costs. Peak growth = cache + O(chunk) activations, so it tracks the analytic cache
figure plus a constant (the activations of one prefill chunk), not T^2.
The machine is shared and busy: times are indicative; bytes are exact.

    .venv/bin/python benchmarks/long_context.py                              # 4K,16K hybrid+full; 64K hybrid
    .venv/bin/python benchmarks/long_context.py --lengths 4096 16384 65536 --full-lengths 4096 16384 65536
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def child(layout: str, length: int, chunk: int, threads: int) -> dict:
    """Prefill `length` random tokens through the engine's chunked prefill; report bytes and time."""
    torch.set_num_threads(threads)
    from kexa import KExaone, ModelConfig
    from kexa.infer import KVCache
    from kexa.infer.engine import Engine

    cfg = ModelConfig.preset("nano").replace(max_position_embeddings=max(length + 1, 16384),
                                             num_nextn_predict_layers=0)
    if layout == "full":
        cfg = cfg.replace(layer_types=["full_attention"] * cfg.num_hidden_layers)
    torch.manual_seed(0)
    model = KExaone(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, length)).tolist()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cache = KVCache(cfg, 1, length, dtype=torch.float32)
    engine = Engine(model, prefill_chunk=chunk)
    t = time.perf_counter()
    with torch.inference_mode():
        engine._prefill(cache, slice(0, 1), ids, keep_hidden=False)
    seconds = time.perf_counter() - t
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"layout": layout, "tokens": length, "prefill_s": seconds, "prefill_tok_s": length / seconds,
            "cache_bytes": cache.cache_bytes(),
            "analytic_bytes": KVCache.analytic_bytes(cfg, length, dtype=torch.float32),
            "peak_rss_growth": peak_rss - base_rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--full-lengths", type=int, nargs="+", default=[4096, 16384],
                    help="lengths also run with every layer global (the full-attention cache)")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=2, metavar=("LAYOUT", "LENGTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.chunk, args.threads)))
        return

    from kexa import ModelConfig
    from kexa.infer import KVCache, full_attention_cache_bytes

    runs = [("hybrid", n) for n in args.lengths] + [("full", n) for n in args.full_lengths]
    results = []
    for layout, n in sorted(runs, key=lambda r: (r[1], r[0])):
        proc = subprocess.run([sys.executable, __file__, "--child", layout, str(n), "--chunk", str(args.chunk),
                               "--threads", str(args.threads)], capture_output=True, text=True)
        if proc.returncode:
            print(f"{layout} {n}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{layout:<7}{n:>7} tokens  cache {r['cache_bytes'] / 2**20:8.1f} MiB (analytic "
              f"{r['analytic_bytes'] / 2**20:8.1f})  peak RSS +{r['peak_rss_growth'] / 2**20:8.1f} MiB  "
              f"prefill {r['prefill_s']:7.1f} s ({r['prefill_tok_s']:6.0f} tok/s)", flush=True)

    cfg = ModelConfig.preset("nano")
    print("\nanalytic KV cache, nano shapes, fp32, batch 1 (hybrid / full attention):")
    for n in sorted(set(args.lengths) | {262144}):
        h = KVCache.analytic_bytes(cfg, n, dtype=torch.float32)
        f = full_attention_cache_bytes(cfg, n, dtype=torch.float32)
        print(f"  {n:>7} tokens: {h / 2**20:9.1f} MiB / {f / 2**20:9.1f} MiB = {100 * h / f:5.1f}%")
    real = ModelConfig.preset("k-exaone-236b")
    h, f = KVCache.analytic_bytes(real, 262144), full_attention_cache_bytes(real, 262144)
    print(f"  K-EXAONE 236B at 256K, bf16: {h / 2**30:.1f} GiB / {f / 2**30:.1f} GiB = {100 * h / f:.1f}%")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
