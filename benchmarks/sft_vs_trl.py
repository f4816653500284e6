"""SFT: `kexa sft` vs TRL's `SFTTrainer` — same nano model, same conversations, same tokens, one thread each.

Setup (built once, cached in --work):
- conversations: worked math problems (kexa.data.mathgen, six languages) as chats — the user asks,
  the assistant answers, with the solution as its reasoning (`<think>` filled) in half of them and the
  empty think block (non-reasoning mode) in the other half; a quarter have a second exchange.
  Disjoint train / held-out sets (different seeds).
- a SuperBPE tokenizer (8,192 tokens, the nano vocabulary) trained on those chats plus local text
  (Python's stdlib, man pages, gettext catalogues), and the `nano` preset with random weights and no
  MTP block (transformers' ExaoneMoeForCausalLM has none), exported once with `save_pretrained` +
  the tokenizer: the one HF folder both sides start from.
- the token sequences: kexa renders each conversation with the K-EXAONE chat template
  (`kexa.data.sft_pack.render_conversations`, what `kexa sft` itself calls; the assistant mask is the
  template's `{% generation %}` spans). TRL gets exactly those ids and masks as a pre-tokenized dataset
  (`input_ids` + `assistant_masks`, the column TRL's `assistant_only_loss` produces from the same
  markers and turns into labels), so both sides train on the same tokens and the same targets.

Training, identical on both sides: one epoch over the training conversations, best-fit-decreasing
packing of whole conversations into rows of seq_len + 1 tokens, one row per step (kexa: document
masking; TRL: `packing=True, packing_strategy="bfd"`, padding-free with position_ids restarting per
conversation, which transformers' sdpa masking turns into block-diagonal attention — checked below),
loss on assistant tokens only, mean per target token; fp32; AdamW (lr, betas (0.9, 0.95), eps 1e-8,
no weight decay, clip 1.0) at a constant lr; kexa's MTP loss, balance loss and expert-bias update off
(the peer has none, so the objective is the same). Each run is its own process with one thread
(OMP_NUM_THREADS=1, torch.set_num_threads(1)); kexa and TRL alternate for --rounds rounds.

Measured: tokens/s = the epoch's conversation tokens (identical on both sides by construction) /
the training time (kexa: the sum of its per-step times from metrics.jsonl, which include packing;
TRL: on_train_begin to the last on_step_end, callbacks of its Trainer); medians over rounds; ratio
kexa / TRL (target >= 1.5). Held-out loss: both exported model folders scored by one function
(kexa's model, assistant-token CE over the held-out conversations, each alone); the relative gap
(target <= 2%). TRL uses transformers' `experts_implementation="grouped_mm"` (its batched MoE path)
and sdpa attention; both are recorded. The shared 2-core machine makes absolute numbers move with
other people's load; the alternating ratio is what to trust.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sft_vs_trl.py            # writes benchmarks/results/sft_vs_trl.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sft_vs_trl.py --rounds 1 --train 24 --json /tmp/x.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error",
       "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
VOCAB = 8192
IGNORE = -100


# ---------------------------------------------------------------------------- data and model (cached)
def conversations(n: int, seed: int) -> list[dict]:
    """`n` chats {"messages": [...]} from mathgen's worked problems; half carry reasoning, a quarter two turns."""
    from kexa.data import mathgen
    r = random.Random(seed)
    langs = [lang for lang, w in mathgen.LANG_WEIGHTS for _ in range(w)]

    def exchange(P, reasoning: bool) -> list[dict]:
        question, solution, answer = r.choice(mathgen.KINDS)(r, P)
        reply = {"role": "assistant", "content": f"{P[2]}: {answer}"}
        if reasoning:
            reply["reasoning_content"] = solution
        return [{"role": "user", "content": f"{P[0]}. {question}"}, reply]

    out = []
    for _ in range(n):
        P = mathgen.PHRASES[r.choice(langs)]
        reasoning = r.random() < 0.5
        messages = exchange(P, reasoning) + (exchange(P, reasoning) if r.random() < 0.25 else [])
        out.append({"messages": messages})
    return out


def tokenizer_text(chats: list[dict], per_source: int = 600_000) -> str:
    """The chats rendered, plus local text, enough for an 8,192-token SuperBPE vocabulary."""
    from kexa.data.corpus import gettext_documents, man_documents, python_stdlib_documents
    from kexa.tokenizer import render
    parts = [render(c["messages"], enable_thinking=any("reasoning_content" in m for m in c["messages"])) for c in chats]
    for source in (python_stdlib_documents(), man_documents(None),
                   *(gettext_documents(lang) for lang in ("ko", "es", "de", "ja", "vi"))):
        got = 0
        for _, doc in source:
            parts.append(doc + "\n\n")
            got += len(doc)
            if got > per_source:
                break
    return "".join(parts)


def prepare(work: Path, n_train: int, n_heldout: int, seed: int) -> dict:
    """work/{base/ (HF folder + tokenizer), train.jsonl, heldout.jsonl, setup.json}; reused when present."""
    setup_path = work / "setup.json"
    key = {"n_train": n_train, "n_heldout": n_heldout, "seed": seed, "vocab": VOCAB}
    if setup_path.exists() and json.loads(setup_path.read_text()).get("key") == key:
        return json.loads(setup_path.read_text())
    import torch

    from kexa import KExaone, ModelConfig
    from kexa.tokenizer import train_superbpe
    work.mkdir(parents=True, exist_ok=True)
    train, heldout = conversations(n_train, seed), conversations(n_heldout, seed + 10_000)
    for name, rows in (("train", train), ("heldout", heldout)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    t0 = time.perf_counter()
    (work / "tokenizer.txt").write_text(tokenizer_text(train), "utf-8")
    tok = train_superbpe([work / "tokenizer.txt"], VOCAB)
    (work / "tokenizer.txt").unlink()
    if tok.vocab_size != VOCAB:
        raise SystemExit(f"tokenizer reached {tok.vocab_size} tokens, not {VOCAB}: give it more text")
    torch.manual_seed(seed)
    cfg = ModelConfig.preset("nano").replace(vocab_size=VOCAB, num_nextn_predict_layers=0)
    model = KExaone(cfg)
    model.save_pretrained(work / "base")
    tok.save_pretrained(work / "base")
    setup = {"key": key, "tokenizer_s": round(time.perf_counter() - t0, 1),
             "params": sum(p.numel() for p in model.parameters())}
    setup_path.write_text(json.dumps(setup, indent=1))
    return setup


def rendered(work: Path, split: str, seq_len: int) -> list:
    """The split's conversations as `kexa sft` renders them (Rendered: ids, mask, reasoning)."""
    from kexa.data.sft_pack import render_conversations
    from kexa.tokenizer import Tokenizer
    tok = Tokenizer.from_pretrained(work / "base")
    rows = [json.loads(line) for line in (work / f"{split}.jsonl").read_text("utf-8").splitlines()]
    items, skipped = render_conversations(tok, rows, split, seq_len + 1)
    assert not skipped
    return items


# ---------------------------------------------------------------------------- held-out loss (one evaluator)
def heldout_loss(model_dir: Path, items: list) -> float:
    """Assistant-token mean CE of the model in `model_dir` over `items`, each conversation alone, fp32."""
    import torch

    from kexa import KExaone
    model = KExaone.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for it in items:
            ids = torch.tensor([it.ids])
            labels = torch.tensor([[t if m else IGNORE for t, m in zip(it.ids[1:], it.mask[1:])]])
            logits = model(ids[:, :-1]).logits  # (1, L-1, V)
            total += float(torch.nn.functional.cross_entropy(logits[0].float(), labels[0], ignore_index=IGNORE,
                                                             reduction="sum"))
            count += int((labels != IGNORE).sum())
    return total / count


# ---------------------------------------------------------------------------- the TRL side (a subprocess)
def run_trl(work: Path, out: Path, seq_len: int, lr: float, seed: int) -> dict:
    import torch
    torch.set_num_threads(1)
    from datasets import Dataset
    from transformers import AutoTokenizer, ExaoneMoeForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    items = rendered(work, "train", seq_len)
    dataset = Dataset.from_list([{"input_ids": it.ids, "assistant_masks": it.mask} for it in items])
    tokenizer = AutoTokenizer.from_pretrained(str(work / "base"))
    model = ExaoneMoeForCausalLM.from_pretrained(str(work / "base"), dtype=torch.float32, attn_implementation="sdpa",
                                                 experts_implementation="grouped_mm")
    args = SFTConfig(
        output_dir=str(out / "trainer"), max_length=seq_len + 1, packing=True, packing_strategy="bfd",
        padding_free=True, per_device_train_batch_size=1, gradient_accumulation_steps=1, num_train_epochs=1,
        learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
        adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0, optim="adamw_torch", bf16=False, fp16=False,
        use_cpu=True, seed=seed, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, include_num_input_tokens_seen="non_padding", dataset_num_proc=None)

    class Clock(TrainerCallback):
        def __init__(self):
            self.start, self.ends, self.tokens = None, [], []

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())
            self.tokens.append(state.num_input_tokens_seen)

    clock = Clock()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock])
    packed_ok = check_trl_packing(trainer, model, items)
    trainer.train()
    trainer.save_model(str(out / "model"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_s": clock.ends[-1] - clock.start, "steps": len(clock.ends), "tokens_seen": clock.tokens[-1],
            "losses": losses, "packed_equals_separate": packed_ok,
            "experts_implementation": model.config._experts_implementation,
            "attn_implementation": model.config._attn_implementation}


def check_trl_packing(trainer, model, items, tol: float = 1e-4) -> float:
    """TRL's first packed batch through the model vs each of its conversations alone: the max |logit
    difference| (tiny when padding-free packing keeps conversations apart, as it must)."""
    import torch
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
        worst = 0.0
        for a, b in zip(starts[:-1], starts[1:]):
            alone = model(input_ids=batch["input_ids"][:, a:b], use_cache=False).logits[0]
            worst = max(worst, float((alone - packed[a:b]).abs().max()))
    model.train()
    if worst > tol:
        raise SystemExit(f"TRL's packed batch attends across conversations (max |logit diff| {worst:.2e}): "
                         "the comparison would not be fair")
    return worst


# ---------------------------------------------------------------------------- the kexa side (`kexa sft`)
def kexa_recipe(work: Path, out: Path, seq_len: int, lr: float, seed: int, steps: int, n_train: int) -> Path:
    recipe = f"""# written by benchmarks/sft_vs_trl.py: the peer's objective and optimiser (see its docstring)
[data]
seq_len = {seq_len}
batch_size = 1
grad_accum = 1
eval_batches = 0

[optim]
name = "adamw"
lr = {lr}
weight_decay = 0.0
betas = [0.9, 0.95]
eps = 1e-8
grad_clip = 1.0

[schedule]
warmup = 0.0
decay = 0.0

[balance]
gamma = 0.0
alpha = 0.0
mtp_weight = 0.0

[train]
steps = {steps}
seed = {seed}
dtype = "fp32"
threads = 1
device = "cpu"
plot = false

[sft]
buffer = {n_train}
heldout_batches = 0
eval_n = 0
eval_before = false

[[source]]
name = "chats"
file = "{work / 'train.jsonl'}"
"""
    path = out / "sft_bench.toml"
    path.write_text(recipe)
    return path


def run_kexa(work: Path, out: Path, seq_len: int, lr: float, seed: int, steps: int, n_train: int) -> dict:
    config = kexa_recipe(work, out, seq_len, lr, seed, steps, n_train)
    cmd = [sys.executable, "-m", "kexa.cli", "sft", "--config", str(config), "--init-from", str(work / "base"),
           "--run-dir", str(out / "run"), "--quiet"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"kexa sft failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"train_s": sum(m["step_s"] for m in metrics), "steps": len(metrics),
            "target_tokens": sum(m.get("target_tokens", 0) for m in metrics), "losses": [m["loss"] for m in metrics],
            "model_dir": str(out / "run" / "model")}


# ---------------------------------------------------------------------------- the harness
def side(args) -> None:
    """One measured run in this (fresh, one-thread) process; writes its result JSON."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run_trl(Path(args.work), out, args.seq, args.lr, args.seed)
    (out / "result.json").write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(ROOT / "cache" / "sft_vs_trl"), help="cached setup + runs")
    ap.add_argument("--train", type=int, default=48, help="training conversations (one epoch)")
    ap.add_argument("--heldout", type=int, default=40)
    ap.add_argument("--seq", type=int, default=512, help="packed row = seq + 1 tokens")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "sft_vs_trl.json"))
    ap.add_argument("--side", choices=["trl"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return side(args)

    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "src"))
    from kexa.data.sft_pack import best_fit

    work = Path(args.work)
    setup = prepare(work, args.train, args.heldout, args.seed)
    train_items, held_items = rendered(work, "train", args.seq), rendered(work, "heldout", args.seq)
    epoch_tokens = sum(len(it.ids) for it in train_items)
    epoch_targets = sum(sum(it.mask[1:]) for it in train_items)
    rows = len(best_fit([len(it.ids) for it in train_items], args.seq + 1))  # kexa's steps for one epoch
    print(f"{len(train_items)} conversations, {epoch_tokens} tokens ({epoch_targets} targets) -> {rows} rows of "
          f"{args.seq + 1}; base {setup['params'] / 1e6:.1f}M parameters", flush=True)

    runs: dict[str, list[dict]] = {"kexa": [], "trl": []}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for name in ("kexa", "trl"):
            out = work / "runs" / f"{name}_{r}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            out.mkdir(parents=True)
            if name == "kexa":
                res = run_kexa(work, out, args.seq, args.lr, args.seed, rows, args.train)
                if res["target_tokens"] != epoch_targets:
                    raise SystemExit(f"kexa trained {res['target_tokens']} targets, one epoch has {epoch_targets}")
            else:
                cmd = [sys.executable, __file__, "--side", "trl", "--work", str(work), "--out", str(out),
                       "--seq", str(args.seq), "--lr", str(args.lr), "--seed", str(args.seed)]
                proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"TRL run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
                res = json.loads((out / "result.json").read_text())
                res["model_dir"] = str(out / "model")
                if res["tokens_seen"] != epoch_tokens:
                    raise SystemExit(f"TRL saw {res['tokens_seen']} tokens, one epoch has {epoch_tokens}")
            res["tokens_per_s"] = epoch_tokens / res["train_s"]
            res["heldout_loss"] = heldout_loss(Path(res["model_dir"]), held_items)
            runs[name].append(res)
            print(f"round {r} {name:4s}: {res['steps']} steps, {res['train_s']:.1f}s, {res['tokens_per_s']:.0f} tok/s, "
                  f"held-out loss {res['heldout_loss']:.4f}", flush=True)

    med = {n: {k: statistics.median(x[k] for x in runs[n]) for k in ("tokens_per_s", "heldout_loss", "train_s")}
           for n in runs}
    ratio = med["kexa"]["tokens_per_s"] / med["trl"]["tokens_per_s"]
    gap = (med["kexa"]["heldout_loss"] - med["trl"]["heldout_loss"]) / med["trl"]["heldout_loss"]
    base_loss = heldout_loss(work / "base", held_items)
    result = {
        "what": "kexa sft vs TRL SFTTrainer: nano (no MTP), same conversations and tokens, one epoch, fp32, 1 thread",
        "args": {k: v for k, v in vars(args).items() if k not in ("side", "out")},
        "epoch_tokens": epoch_tokens, "epoch_target_tokens": epoch_targets, "kexa_steps": rows,
        "trl_steps": runs["trl"][0]["steps"], "params": setup["params"],
        "trl_experts_implementation": runs["trl"][0]["experts_implementation"],
        "trl_attn_implementation": runs["trl"][0]["attn_implementation"],
        "trl_packed_equals_separate_max_diff": max(x["packed_equals_separate"] for x in runs["trl"]),
        "heldout_loss_before": base_loss,
        "median": med, "tokens_per_s_ratio": ratio, "target_ratio": 1.5, "heldout_loss_rel_gap": gap,
        "target_rel_gap": 0.02,
        "runs": {n: [{k: v for k, v in x.items() if k != "model_dir"} for x in runs[n]] for n in runs},
        "torch_threads": 1, "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"kexa / TRL tokens/s: {ratio:.2f}x (target >= 1.5x); held-out loss kexa {med['kexa']['heldout_loss']:.4f} "
          f"TRL {med['trl']['heldout_loss']:.4f} (gap {gap:+.2%}, target within 2%; before training {base_loss:.4f})")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
