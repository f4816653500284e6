"""Training throughput (tokens/s): the `kexa pretrain` loop on `nano` vs a plain transformers loop.

kexa: `kexa.train.loop.train` exactly as `kexa pretrain` runs it (packed curriculum loader, Muon +
AdamW, WSD, bias update, balance metrics, metrics.jsonl, non-finite guard), MTP disabled because
transformers' ExaoneMoeForCausalLM has none. Peer: ExaoneMoeForCausalLM on the same config (the
experts_implementation transformers picks by default is printed), torch AdamW, batches from the
same loader, forward with labels, backward, clip, step. Same dtype (fp32 by default, --dtype bf16
for autocast), same batch, one thread each. The two alternate in chunks of --chunk steps for
--rounds rounds in one process; per-step times exclude each chunk's first 2 steps; medians and the
kexa/HF ratio are printed (target >= 1.2x) and written to benchmarks/results/train_throughput_<optim>
[_compiled].json (--out to change). This machine's 2 cores are shared: compare ratios only.

    .venv/bin/python benchmarks/train_throughput.py --chunk 8 --rounds 3   # the shipped nano recipe (Muon)
    .venv/bin/python benchmarks/train_throughput.py --optim adamw      # the loop alone, optimiser matched
    .venv/bin/python benchmarks/train_throughput.py --compile          # kexa's compiled decoder blocks
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time

import torch

from _results import write_result

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/nano.toml")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--optim", default="muon", choices=["muon", "adamw"], help="kexa's optimiser (HF: AdamW)")
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimiser step (both loops)")
    ap.add_argument("--compile", action="store_true", help="kexa with train.compile=true (compiled decoder blocks)")
    ap.add_argument("--out", default=None, help="result name or .json path (default train_throughput_<optim>[_compiled])")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import ExaoneMoeConfig, ExaoneMoeForCausalLM
    from kexa.data.loader import Curriculum, PackedLoader, Stage
    from kexa.train.loop import train
    from kexa.train.prepare import prepare_data
    from kexa.train.recipe import load_recipe

    sets = [f"train.steps={args.chunk}", f"data.seq_len={args.seq}", f"data.batch_size={args.batch}",
            f"train.dtype={args.dtype}", "model.num_nextn_predict_layers=0", "train.save_every=0",
            "train.plot=false", "data.eval_batches=0", f"optim.name={args.optim}", f"data.grad_accum={args.grad_accum}",
            f"train.compile={str(args.compile).lower()}"]
    recipe = load_recipe(args.config, sets)
    data = prepare_data(recipe)
    data.heldout = {}  # no evaluation inside the timed loop
    cfg = recipe.model_config(data.vocab_size)
    torch.manual_seed(0)
    hf = ExaoneMoeForCausalLM(ExaoneMoeConfig(**cfg.to_hf())).train()
    impl = getattr(hf.config, "_experts_implementation", None)
    opt = torch.optim.AdamW(hf.parameters(), lr=recipe.optim.lr, betas=tuple(recipe.optim.betas),
                            weight_decay=recipe.optim.weight_decay)
    loader = PackedLoader(data.train, args.seq, args.batch,
                          Curriculum([Stage("all", 1.0, {n: 1.0 for n in data.train})], 10**6, list(data.train)))
    def amp():
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()

    def hf_chunk() -> list[float]:
        times = []
        for _ in range(args.chunk):
            t = time.perf_counter()
            for _ in range(args.grad_accum):
                x, y = loader.next_batch()
                with amp():
                    logits = hf(input_ids=x).logits
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
                (loss / args.grad_accum).backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), recipe.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
        return times[2:]

    def kexa_chunk() -> list[float]:
        with tempfile.TemporaryDirectory() as run:
            res = train(recipe, run, data, quiet=True)
        return [m["step_s"] for m in res.history[2:]]

    kx, hx = [], []
    if args.compile:  # trace once, outside the timed rounds (the compiled blocks are reused by every chunk)
        t = time.perf_counter()
        kexa_chunk()
        print(f"compilation + first chunk: {time.perf_counter() - t:.0f} s", flush=True)
    for r in range(args.rounds):
        kx += kexa_chunk()
        hx += hf_chunk()
        print(f"round {r + 1}: kexa {statistics.median(kx):.3f}s/step  hf {statistics.median(hx):.3f}s/step", flush=True)
    tokens = args.seq * args.batch * args.grad_accum
    k_tps, h_tps = tokens / statistics.median(kx), tokens / statistics.median(hx)
    result = {"config": args.config, "tokens_per_step": tokens, "dtype": args.dtype, "kexa_optim": args.optim,
              "hf_optim": "adamw", "hf_experts_implementation": impl, "kexa_compiled": args.compile,
              "kexa_tok_s": round(k_tps, 1), "hf_tok_s": round(h_tps, 1), "ratio": round(k_tps / h_tps, 3),
              "target_ratio": 1.2, "threads": args.threads, "measured_steps_each": len(kx),
              "kexa_step_s": kx, "hf_step_s": hx}
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_step_s")}, indent=1))
    write_result(args.out or f"train_throughput_{args.optim}" + ("_compiled" if args.compile else ""), result)


if __name__ == "__main__":
    main()
