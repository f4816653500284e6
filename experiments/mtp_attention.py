"""Which attention should the MTP block use, full (NoPE) or sliding-window (RoPE)? An experiment.

The sources disagree on K-EXAONE's MTP layer type (reference §6: UNCONFIRMED; kexa defaults to
full/NoPE, `ModelConfig.mtp_layer_type`). What matters for self-speculative decoding is how often
the block's draft is accepted, so this script settles it on a trained model:

  1. load a trained main model (default: runs/nano600/model, `kexa pretrain --config configs/nano.toml`)
     and freeze it: backbone, embeddings and lm_head (the MTP block shares the last two, as in training);
  2. build one fresh MTP block per attention type from the *same* initial weights (the two types have
     identical parameters; they differ in mask and RoPE only);
  3. train both on the *same* batches (the recipe's pre-training mixture, a loader seed the main model
     did not see), AdamW, MTP cross-entropy only: the frozen main forward runs once per batch;
  4. evaluate on the held-out windows: MTP cross-entropy on token t+2, and agreement of the block's
     argmax with the main model's own argmax for t+2 (given the true t+1) - the per-position greedy
     acceptance of one draft, teacher-forced; then real acceptance and speed of greedy k=1 / k=2
     speculative generation through the engine on held-out prompts (benchmarks/speculative.py's
     protocol), and the jointly trained block of the checkpoint as a reference.

    .venv/bin/python experiments/mtp_attention.py --steps 200 --json experiments/results/mtp_attention.json

The comparison is paired (same init, same data, same steps); run-to-run noise is the difference
between seeds (--seed). The CPU is shared: only the acceptance numbers are robust, not the speeds.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import sys
import time
from pathlib import Path

import torch

TYPES = ("full_attention", "sliding_attention")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/nano600/model", help="trained main model with MTP (tokenizer beside)")
    ap.add_argument("--recipe", default="configs/nano.toml", help="recipe whose data the MTP blocks train on")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-batches", type=int, default=2, help="held-out batches per domain")
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from kexa import KExaone
    from kexa.data.loader import IGNORE, PackedLoader, heldout_batches
    from kexa.infer import Engine, SamplingParams
    from kexa.model.transformer import cross_entropy
    from kexa.tokenizer import Tokenizer
    from kexa.train.loop import curriculum
    from kexa.train.prepare import prepare_data
    from kexa.train.recipe import load_recipe

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from speculative import load_prompts  # benchmarks/speculative.py: held-out prompts

    trained = KExaone.from_pretrained(args.model).eval()
    tok = Tokenizer.from_pretrained(args.model)
    recipe = load_recipe(args.recipe)
    data = prepare_data(recipe)
    if data.vocab_size != trained.config.vocab_size:
        raise SystemExit(f"recipe tokenizer has {data.vocab_size} tokens, model {trained.config.vocab_size}")
    dc = recipe.data
    loader = PackedLoader(data.train, dc.seq_len, dc.batch_size, curriculum(recipe, data.train, args.steps),
                          seed=args.seed)
    eval_set = heldout_batches(data.heldout, dc.seq_len, dc.batch_size, args.eval_batches)

    # one model per attention type: the trained backbone, a fresh MTP block from one seed
    models = {}
    for kind in TYPES:
        cfg = copy.deepcopy(trained.config)
        cfg.mtp_layer_type = kind
        torch.manual_seed(args.seed)
        m = KExaone(cfg)
        missing, unexpected = m.load_state_dict({k: v for k, v in trained.state_dict().items()
                                                 if not k.startswith("mtp.")}, strict=False)
        assert not unexpected and all(k.startswith("mtp.") for k in missing), (missing, unexpected)
        for name, p in m.named_parameters():
            p.requires_grad_(name.startswith("mtp."))
        models[kind] = m.train()
    first, second = (dict(models[t].mtp.named_parameters()) for t in TYPES)
    assert all(torch.equal(first[n], second[n]) for n in first), "the two MTP blocks must start equal"
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.95),
                                 weight_decay=0.1) for k, m in models.items()}
    backbone = models[TYPES[0]]  # identical frozen main model in both

    def hidden_of(ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return backbone(ids, compute_mtp=False, return_hidden=True).hidden_states  # (B, T, C)

    def mtp_ce(m, h, ids, labels) -> torch.Tensor:
        logits, _ = m.mtp_forward(h[:, :-1], ids[:, 1:])  # (B, T-1, V): token t+2
        return cross_entropy(logits, labels[:, 1:], IGNORE)

    print(f"model {args.model}: MTP blocks {TYPES} from seed {args.seed}, {args.steps} steps x "
          f"{dc.batch_size} x {dc.seq_len} tokens, AdamW lr {args.lr} (warmup 5%, linear decay), main model frozen")
    t0 = time.perf_counter()
    curve = []
    for step in range(1, args.steps + 1):
        ids, labels = loader.next_batch()
        h = hidden_of(ids)
        lr = args.lr * min(1.0, step / max(1, args.steps // 20)) * (1 - (step - 1) / args.steps)
        row = {"step": step}
        for kind, m in models.items():
            loss = mtp_ce(m, h, ids, labels)
            opts[kind].zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.requires_grad], 1.0)
            for g in opts[kind].param_groups:
                g["lr"] = lr
            opts[kind].step()
            row[kind] = loss.item()
        curve.append(row)
        if step % 25 == 0 or step == args.steps:
            print(f"step {step}: " + "  ".join(f"{k} {row[k]:.3f}" for k in TYPES)
                  + f"  ({time.perf_counter() - t0:.0f}s)", flush=True)

    # teacher-forced evaluation on held-out windows
    candidates = {"joint (checkpoint, " + trained.config.mtp_layer_type + ")": trained} | models
    evals = {}
    with torch.no_grad():
        for name, m in candidates.items():
            m.eval()
            ce_sum, n_tok, agree = 0.0, 0, 0
            for _, ids, labels in eval_set:
                out = m(ids, compute_mtp=False, return_hidden=True)
                logits, _ = m.mtp_forward(out.hidden_states[:, :-1], ids[:, 1:])  # predicts t+2
                lab = labels[:, 1:]
                ok = lab != IGNORE
                ce_sum += torch.nn.functional.cross_entropy(logits[ok].float(), lab[ok], reduction="sum").item()
                agree += (logits.argmax(-1) == out.logits[:, 1:].argmax(-1))[ok].sum().item()
                n_tok += ok.sum().item()
            evals[name] = {"heldout_mtp_ce": ce_sum / n_tok, "argmax_agreement": agree / n_tok}

    # real greedy speculative generation
    files = sorted(glob.glob("cache/corpus/*/heldout.txt"))
    prompts = load_prompts(tok, files, args.prompt_tokens)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    for name, m in candidates.items():
        engine = Engine(m)
        plain = engine.generate(prompts, params).token_ids
        for k in (1, 2):
            res = engine.generate(prompts, params, speculative=k)
            assert res.token_ids == plain, f"{name}: speculative greedy differs from plain greedy"
            evals[name][f"k{k}_acceptance_per_position"] = res.stats.acceptance_per_position
            evals[name][f"k{k}_mean_tokens_per_step"] = res.stats.mean_accepted_length

    print(f"\nheld-out ({sum(len(b[1]) for b in eval_set)} windows of {dc.seq_len}) and greedy generation "
          f"({len(prompts)} prompts x {args.new_tokens} tokens, batch {len(prompts)}):")
    print(f"{'MTP block':<36}{'MTP CE':>8}{'agree':>8}{'k=1 acc':>9}{'k=2 acc/pos':>14}{'k=2 tok/step':>14}")
    for name, e in evals.items():
        k2 = ",".join(f"{a:.2f}" for a in e["k2_acceptance_per_position"])
        print(f"{name:<36}{e['heldout_mtp_ce']:>8.3f}{e['argmax_agreement']:>8.3f}"
              f"{e['k1_acceptance_per_position'][0]:>9.3f}{k2:>14}{e['k2_mean_tokens_per_step']:>14.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "evals": evals, "curve": curve,
                       "train_seconds": time.perf_counter() - t0}, f, indent=1)


if __name__ == "__main__":
    main()
