"""MTP self-speculative decoding on a trained model: acceptance per draft position, mean accepted
length, and decode speed-up over plain decoding, at batch 1 and a larger batch, k = 1 and 2 drafts.

The model must be trained (random weights accept nothing): pass a folder written by `kexa pretrain`
(RUN/model, tokenizer beside it). Prompts are the first `--prompt-tokens` tokens of held-out
documents (default: the corpus cache's heldout.txt files, one prompt per domain, cycled to the
batch size). Every configuration generates exactly `--new-tokens` tokens (no stop token), greedy
by default (`--temperature`), so all runs do the same amount of work and greedy speculative output
is also checked to be identical to plain decoding. Runs alternate plain / k=1 / k=2 in one process;
we print medians over --reps. Speed-ups are of end-to-end generation (prefill included; prompts
are short). Note the shared, busy 2-core machine: trust the alternating ratios, not absolute rates.

    .venv/bin/python benchmarks/speculative.py --model runs/nano/model
    .venv/bin/python benchmarks/speculative.py --model runs/tiny/model --batch 1 8 --reps 3 --json out.json
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import time

import torch


def load_prompts(tok, files: list[str], n_tokens: int) -> list[list[int]]:
    prompts = []
    for f in files:
        text = open(f, encoding="utf-8").read(20000)
        ids = tok.encode(text)
        if len(ids) >= n_tokens:
            prompts.append(ids[:n_tokens])
    if not prompts:
        raise SystemExit(f"no prompt of {n_tokens} tokens in {files}")
    return prompts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="trained model folder with its tokenizer")
    ap.add_argument("--text", nargs="*", default=None, help="prompt source files (default: cache/corpus/*/heldout.txt)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--drafts", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from kexa import KExaone
    from kexa.infer import Engine, SamplingParams
    from kexa.tokenizer import Tokenizer

    model = KExaone.from_pretrained(args.model)
    tok = Tokenizer.from_pretrained(args.model)
    files = args.text or sorted(glob.glob("cache/corpus/*/heldout.txt"))
    base_prompts = load_prompts(tok, files, args.prompt_tokens)
    engine = Engine(model)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=args.temperature, seed=0)
    print(f"model {args.model}: {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
          f"vocab {model.config.vocab_size}, MTP attention {model.config.mtp_layer_type}; "
          f"{len(base_prompts)} held-out prompts of {args.prompt_tokens} tokens, {args.new_tokens} new tokens, "
          f"temperature {args.temperature}, threads {args.threads}, {args.reps} alternating reps (medians)")
    print(f"{'batch':>5}{'k':>3}{'tok/s':>9}{'speedup':>9}{'tok/cpu-s':>11}{'cpu speedup':>13}"
          f"{'accept/pos':>20}{'mean len':>10}{'same out':>10}")
    rows = []
    for b in args.batch:
        prompts = [base_prompts[i % len(base_prompts)] for i in range(b)]
        configs = [0] + args.drafts
        times = {k: [] for k in configs}
        cpu = {k: [] for k in configs}  # process CPU time: robust to other users' load on shared cores
        stats, outputs = {}, {}
        for rep in range(args.reps + 1):  # round 0 warms up
            for k in (configs if rep % 2 == 0 else configs[::-1]):
                t, c = time.perf_counter(), time.process_time()
                result = engine.generate(prompts, params, speculative=k)
                if rep:
                    times[k].append(time.perf_counter() - t)
                    cpu[k].append(time.process_time() - c)
                stats[k], outputs[k] = result.stats, result.token_ids
        plain, plain_cpu = statistics.median(times[0]), statistics.median(cpu[0])
        for k in configs:
            med, med_cpu = statistics.median(times[k]), statistics.median(cpu[k])
            s = stats[k]
            acc = ",".join(f"{a:.2f}" for a in s.acceptance_per_position) if k else "-"
            mean_len = f"{s.mean_accepted_length:.2f}" if k else "1.00"
            same = ("yes" if outputs[k] == outputs[0] else "NO") if args.temperature == 0 else "n/a"
            print(f"{b:>5}{k:>3}{b * args.new_tokens / med:>9.1f}{plain / med:>9.2f}"
                  f"{b * args.new_tokens / med_cpu:>11.1f}{plain_cpu / med_cpu:>13.2f}{acc:>20}{mean_len:>10}{same:>10}")
            rows.append({"batch": b, "k": k, "tokens_per_s": b * args.new_tokens / med, "speedup": plain / med,
                         "tokens_per_cpu_s": b * args.new_tokens / med_cpu, "cpu_speedup": plain_cpu / med_cpu,
                         "acceptance_per_position": s.acceptance_per_position if k else None,
                         "mean_accepted_length": s.mean_accepted_length if k else 1.0,
                         "same_as_plain": outputs[k] == outputs[0]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
