"""How fast does a freshly initialised model learn to copy? Toy tasks, same model, same budget.

  offset     32 random tokens, then the same 32 again: every repeated token sits exactly 32
             positions back, so a RoPE (sliding-window) head can copy by *position* alone
  induction  random tokens with a list of 8-24 random tokens at a random place and again after a
             random gap: the source is found only by *content* (the token after the previous
             occurrence of the current one - an induction head, Olsson et al. 2022)
  segments   the dense variant: T/2 random tokens cut into 4 segments, then the segments again in
             a shuffled order - ~45% of all tokens are content-addressed copy targets (4x `induction`)

Loss is on the repeated tokens only (after the first one of each repeat), in nats; chance is
ln(vocabulary range) (5.99 for 400 token ids, 7.55 for 1900, ln(--vocab) for segments). The model is
a `ModelConfig` preset without MTP (fields overridable with --set), or with --reference a textbook
GPT-2-style transformer (learned positions, LayerNorm, GELU MLP; not kexa code) - the control that
tells a kexa defect from a budget too small for the induction phase change. AdamW throughout. This
separates "the model cannot copy" from "the model has not formed the content-addressed mechanism
yet" when NIAH is 0 (docs/context_extension.md).

    .venv/bin/python experiments/induction_toy.py --task offset --steps 300
    .venv/bin/python experiments/induction_toy.py --task induction --steps 400 --lr 3e-3
    .venv/bin/python experiments/induction_toy.py --task segments --vocab 64 --steps 600 --set num_hidden_layers=2 \
        --set 'layer_types=["sliding_attention","sliding_attention"]' --set 'mlp_layer_types=["dense","dense"]' \
        --set sliding_window=128
    .venv/bin/python experiments/induction_toy.py --task segments --vocab 64 --reference --batch 32
"""

from __future__ import annotations

import argparse
import math
import random
import time

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceTransformer(nn.Module):
    """A textbook pre-LN GPT-2-style decoder (learned absolute positions, LayerNorm, GELU MLP, MHA
    with a fused qkv): the control model. (B, T) ids -> (B, T, vocab) logits."""

    def __init__(self, vocab: int, max_len: int, layers: int = 2, dim: int = 256, heads: int = 8):
        super().__init__()
        self.heads = heads
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(dim), "qkv": nn.Linear(dim, 3 * dim, bias=False), "out": nn.Linear(dim, dim, bias=False),
            "ln2": nn.LayerNorm(dim), "mlp": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
        }) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        h = self.tok(ids) + self.pos(torch.arange(T))  # (B, T, C)
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](h)).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
            h = h + blk["out"](F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1))
            h = h + blk["mlp"](blk["ln2"](h))
        return self.head(self.ln(h))


def example(task: str, rng: random.Random, T: int, vocab: int) -> tuple[list[int], list[tuple[int, int]]]:
    """T + 1 token ids and the repeats in them as (start, length): the copy targets are each repeat's
    2nd..last tokens (its first is unpredictable)."""
    if task == "offset":
        n, lo, hi = T // 2, 100, 500
        lst = [rng.randrange(lo, hi) for _ in range(n)]
        return lst + lst + [rng.randrange(lo, hi)], [(n, n)]  # the repeat starts at n
    if task == "segments":
        lo, half = 100, (T + 1) // 2
        cuts = sorted(rng.sample(range(1, half), 3))
        lst = [rng.randrange(lo, lo + vocab) for _ in range(half)]
        segs = list(zip([0] + cuts, cuts + [half]))  # 4 segments of lst as (start, end)
        order = list(range(len(segs)))
        while order == sorted(order):  # the identity order would be copyable by position
            rng.shuffle(order)
        seq, repeats = lst[:], []
        for a, b in (segs[i] for i in order):
            repeats.append((len(seq), b - a))
            seq += lst[a:b]
        return seq + [lo] * (T + 1 - len(seq)), repeats
    lo, hi = 100, 2000
    n = rng.randint(8, 24)
    gap = rng.randint(0, T - 2 * n - 1)
    pre = rng.randint(0, T - 2 * n - gap)
    lst = [rng.randrange(lo, hi) for _ in range(n)]
    noise = [rng.randrange(lo, hi) for _ in range(T + 1)]
    seq = noise[:pre] + lst + noise[pre:pre + gap] + lst
    return seq + noise[len(seq):], [(pre + n + gap, n)]


def batch(task: str, rng: random.Random, B: int, T: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, labels (B, T); labels are -100 except on the copy targets."""
    xs, ys = [], []
    for _ in range(B):
        seq, repeats = example(task, rng, T, vocab)
        seq, lab = seq[:T + 1], [-100] * (T + 1)
        for start, n in repeats:
            for i in range(start + 1, min(start + n, T + 1)):
                lab[i] = seq[i]
        xs.append(seq)
        ys.append(lab)
    x, y = torch.tensor(xs), torch.tensor(ys)
    return x[:, :-1], y[:, 1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["offset", "induction", "segments"], default="induction")
    ap.add_argument("--vocab", type=int, default=1900, help="segments: random ids drawn from this many")
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a ModelConfig field as a recipe's [model] does, e.g. --set num_hidden_layers=2")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (offset), 3e-3 (induction)")
    ap.add_argument("--batch", type=int, default=None, help="default 16 (offset), 8 (induction)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference", action="store_true", help="train the textbook 2-layer control instead of kexa")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    offset = args.task == "offset"
    args.lr = args.lr or (1e-3 if offset else 3e-3)
    args.batch = args.batch or (16 if offset else 8)

    from kexa import KExaone
    from kexa.model.transformer import cross_entropy
    from kexa.train.recipe import load_recipe

    cfg = load_recipe(None, [f"model.preset={args.preset!r}", "model.num_nextn_predict_layers=0",
                             *(f"model.{item}" for item in args.set)]).model_config()
    torch.manual_seed(0)
    T = 64 if offset else args.seq_len
    if args.reference:
        model, name = ReferenceTransformer(cfg.vocab_size, T), "reference 2-layer transformer"
    else:
        model, name = KExaone(cfg), f"kexa {args.preset} {' '.join(args.set)}"
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = random.Random(0)
    chance = math.log(400 if offset else args.vocab if args.task == "segments" else 1900)
    print(f"{name}, task {args.task}, {args.batch} x {T} tokens, AdamW lr {args.lr}; chance {chance:.2f} nats")
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        x, y = batch(args.task, rng, args.batch, T, args.vocab)
        logits = model(x) if args.reference else model(x, compute_mtp=False).logits
        loss = cross_entropy(logits, y)  # the repeat tokens only (labels -100 elsewhere)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.every == 0:
            print(f"step {step:5d}  repeat loss {loss.item():.3f}  ({time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
