"""Has the model formed a copy (induction) mechanism yet? A probe over a run's checkpoints.

NIAH needs retrieval at the pre-training length before any extension can carry it further
(docs/context_extension.md). Exact-match NIAH stays 0 until every digit is right, so this probe
measures the mechanism itself: a list of 4-6 held-out pseudo-word keys (the eval split of
kexa.data.synthetic, never trained on) appears once inside held-out text and again after the
"repeat the list" line (six languages). A model that copies predicts the repeat almost for free;
one that does not pays about what the first occurrence costs. Reported per checkpoint:
mean token loss on the first occurrence, on the repeat, the gain (first - repeat, nats/token), and
optionally NIAH at the same length (`--niah`: 5 depths x --samples haystacks, exact match + digits)
and the needle's *value preference*: over --lists NIAH prompts, how often the model gives the
needle's value a lower loss than another held-out value (0.5 = no lookup, 1.0 = always the right
one), with both mean losses - graded evidence of key-value retrieval before exact match moves.

    .venv/bin/python experiments/induction_probe.py --run runs/nano-short --length 128 --niah
    .venv/bin/python experiments/induction_probe.py --models runs/a/model runs/b/model --tokenizer runs/a/model
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import numpy as np
import torch


def next_token_nll(model, ids: list[int]) -> torch.Tensor:
    """(len(ids) - 1,) nll[t] = the model's loss on token t + 1 given ids[:t + 1]."""
    x = torch.tensor(ids)[None]  # (1, T)
    with torch.no_grad():
        logp = torch.log_softmax(model(x, compute_mtp=False).logits[0].float(), -1)  # (T, V)
    return -logp[:-1].gather(1, x[0, 1:, None])[:, 0]


def copy_probe(model, encode, haystack, length: int, n_lists: int, seed: int = 0) -> dict:
    """Mean token NLL of a key list's first occurrence and of its repeat, over n_lists prompts of
    exactly `length` tokens: held-out filler, the list on its own line at a random point in the first
    half of the room, more filler, the repeat instruction, the list."""
    from kexa.data.synthetic import TEMPLATES, Vocab

    rng, vocab = random.Random(seed), Vocab("eval")
    langs = list(TEMPLATES)
    first, repeat = [], []
    for i in range(n_lists):
        items = " ".join(vocab.keys(rng, rng.randint(4, 6)))
        head = encode("\n" + items + "\n")
        lst = encode(items + "\n")
        tail = encode("\n" + TEMPLATES[langs[i % len(langs)]]["repeat"] + "\n") + lst
        room = length - len(head) - len(tail)
        if room < 0:
            raise ValueError(f"length {length} is too short for a {len(head) + len(tail)}-token copy probe")
        filler = haystack.span(rng, room)
        cut = rng.randint(0, room // 2)
        nll = next_token_nll(model, filler[:cut] + head + filler[cut:] + tail)  # (length - 1,)
        # both occurrences from their second token on (the first carries the newline in `head`)
        first.append(nll[cut:cut + len(head) - 1].mean().item())
        repeat.append(nll[length - len(lst):].mean().item())
    return {"first": float(np.mean(first)), "repeat": float(np.mean(repeat)),
            "gain": float(np.mean(first) - np.mean(repeat))}


def value_preference(model, encode, haystack, length: int, n_cases: int, seed: int = 0) -> dict:
    """NIAH prompts at `length` (5 depths, six languages): per-token NLL of the needle's value as the
    answer vs of another held-out value; the share of cases where the needle's value wins."""
    from kexa.data.synthetic import TEMPLATES
    from kexa.eval.niah import CaseBuilder, NiahConfig

    builder = CaseBuilder(encode, haystack, NiahConfig(lengths=[length]))
    rng, langs, depths = random.Random(seed), list(TEMPLATES), [0.0, 0.25, 0.5, 0.75, 1.0]

    def answer_nll(prompt: list[int], answer: list[int]) -> float:  # mean over the answer's tokens
        return next_token_nll(model, prompt + answer)[len(prompt) - 1:].mean().item()

    true, other = [], []
    for i in range(n_cases):
        case = builder.build(rng, length, depths[i % len(depths)], langs[i % len(langs)])
        decoy = case.value
        while decoy == case.value:
            decoy = builder.vocab.value(rng)
        true.append(answer_nll(case.prompt, encode(" " + case.value)))
        other.append(answer_nll(case.prompt, encode(" " + decoy)))
    return {"value_nll": float(np.mean(true)), "decoy_nll": float(np.mean(other)),
            "value_preferred": float(np.mean(np.array(true) < np.array(other)))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None, help="a kexa pretrain run folder: every checkpoint, then RUN/model")
    ap.add_argument("--every", type=int, default=1, help="--run: only checkpoints whose step is a multiple of this")
    ap.add_argument("--models", nargs="*", default=[], help="model folders (instead of / besides --run)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: RUN/model or the first model)")
    ap.add_argument("--corpus", default="cache/corpus", help="corpus folder whose held-out split is the filler")
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--lists", type=int, default=24)
    ap.add_argument("--niah", action="store_true", help="also NIAH at --length")
    ap.add_argument("--samples", type=int, default=4, help="NIAH haystacks per depth")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from kexa import KExaone
    from kexa.data.synthetic import TEMPLATES
    from kexa.eval.cli import corpus_haystack
    from kexa.eval.niah import NiahConfig, evaluate_niah
    from kexa.tokenizer import Tokenizer

    models = []
    if args.run:
        run = Path(args.run)
        ckpts = sorted((run / "checkpoints").glob("step_*/model"))
        steps = [(int(re.search(r"step_(\d+)", str(c)).group(1)), c) for c in ckpts]
        models += [(step, c) for step, c in steps if step % args.every == 0]
        if (run / "model" / "config.json").exists():
            models.append(("final", run / "model"))
    models += [(str(m), Path(m)) for m in args.models]
    if not models:
        raise SystemExit("nothing to probe: give --run with checkpoints or --models")
    tok_dir = args.tokenizer or (Path(args.run) / "model" if args.run and (Path(args.run) / "model").exists()
                                 else models[0][1])
    tok = Tokenizer.from_pretrained(tok_dir)
    haystack = corpus_haystack(Path(args.corpus), None, tok.encode)

    print(f"copy probe at {args.length} tokens, {args.lists} held-out lists of 4-6 keys; loss in nats/token"
          + (f"; NIAH@{args.length} 5 depths x {args.samples}" if args.niah else ""))
    print(f"{'checkpoint':>12}{'first':>8}{'repeat':>8}{'gain':>8}" + (f"{'NIAH':>7}{'digits':>8}{'pref':>7}" if args.niah else ""))
    rows = []
    for step, folder in models:
        model = KExaone.from_pretrained(folder).eval()
        row = {"checkpoint": step, "path": str(folder)} | copy_probe(model, tok.encode, haystack, args.length, args.lists)
        line = f"{step!s:>12}{row['first']:>8.3f}{row['repeat']:>8.3f}{row['gain']:>8.3f}"
        if args.niah:
            cfg = NiahConfig(lengths=[args.length], samples=args.samples, languages=list(TEMPLATES))
            res = evaluate_niah(model, tok, cfg, haystack=haystack, source=f"held-out corpus {args.corpus}")
            row["niah"] = res["accuracy"][str(args.length)]
            row["niah_digits"] = res["digit_accuracy"][str(args.length)]
            row |= value_preference(model, tok.encode, haystack, args.length, args.lists)
            line += f"{row['niah']:>7.2f}{row['niah_digits']:>8.3f}{row['value_preferred']:>7.2f}"
        print(line, flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
