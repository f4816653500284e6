"""How fast does a freshly initialised model learn to copy? Two toy tasks, same model, same budget.

  offset     32 random tokens, then the same 32 again: every repeated token sits exactly 32
             positions back, so a RoPE (sliding-window) head can copy by *position* alone
  induction  random tokens with a list of 8-24 random tokens at a random place and again after a
             random gap: the source is found only by *content* (the token after the previous
             occurrence of the current one - an induction head, Olsson et al. 2022)

Loss is on the repeated tokens only (after the first one of the repeat), in nats; chance is
ln(vocabulary range) (5.99 for 400 token ids, 7.55 for 1900). The model is a `ModelConfig`
preset without MTP, trained with AdamW. This separates "the model cannot copy" from "the model has
not formed the content-addressed mechanism yet" when NIAH is 0 (docs/context_extension.md).

    .venv/bin/python benchmarks/induction_toy.py --task offset --steps 300
    .venv/bin/python benchmarks/induction_toy.py --task induction --steps 400 --lr 3e-3
"""

from __future__ import annotations

import argparse
import math
import random
import time

import torch


def batch(task: str, rng: random.Random, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, labels (B, T); labels are -100 except on the repeat's 2nd..last tokens."""
    xs, ys = [], []
    for _ in range(B):
        if task == "offset":
            n, lo, hi = T // 2, 100, 500
            lst = [rng.randrange(lo, hi) for _ in range(n)]
            seq, start = lst + lst + [rng.randrange(lo, hi)], n  # the repeat starts at n; T + 1 tokens
        else:
            lo, hi = 100, 2000
            n = rng.randint(8, 24)
            gap = rng.randint(0, T - 2 * n - 1)
            pre = rng.randint(0, T - 2 * n - gap)
            lst = [rng.randrange(lo, hi) for _ in range(n)]
            noise = [rng.randrange(lo, hi) for _ in range(T + 1)]
            seq = noise[:pre] + lst + noise[pre:pre + gap] + lst
            start = pre + n + gap
            seq += noise[len(seq):]
        seq = seq[:T + 1]
        lab = [-100] * (T + 1)
        for i in range(start + 1, min(start + n, T + 1)):
            lab[i] = seq[i]
        xs.append(seq)
        ys.append(lab)
    x, y = torch.tensor(xs), torch.tensor(ys)
    return x[:, :-1], y[:, 1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["offset", "induction"], default="induction")
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (offset), 3e-3 (induction)")
    ap.add_argument("--batch", type=int, default=None, help="default 16 (offset), 8 (induction)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    offset = args.task == "offset"
    args.lr = args.lr or (1e-3 if offset else 3e-3)
    args.batch = args.batch or (16 if offset else 8)

    from kexa import KExaone
    from kexa.config import ModelConfig

    cfg = ModelConfig.preset(args.preset)
    cfg.num_nextn_predict_layers = 0
    torch.manual_seed(0)
    model = KExaone(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(0)
    T = 64 if offset else args.seq_len
    chance = math.log(400 if offset else 1900)
    print(f"{args.preset}, task {args.task}, {args.batch} x {T} tokens, AdamW lr {args.lr}; chance {chance:.2f} nats")
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        x, y = batch(args.task, rng, args.batch, T)
        loss, _ = model.loss(model(x, compute_mtp=False), y, balance_coef=0.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.every == 0:
            print(f"step {step:5d}  repeat loss {loss.item():.3f}  ({time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
