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
(the peer has none, so the objective is the same). Same rows in the same order: TRL gets the
conversations in the order `kexa sft` draws them, so its own BFD packing makes kexa's rows, and its
sampler serves them in kexa's (shuffled) row order — checked per step on both sides (kexa's target
tokens, TRL's tokens). With the same start, data and order, the two per-step training losses must
agree up to rounding drift; that, and the held-out loss, test that the objective is the same. Each
run is its own process with one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)); kexa and TRL
alternate for --rounds rounds.

Measured: each side in its own process (kexa: `kexa.train.sft.sft`, what `kexa sft` calls, with an
on_step clock; TRL: a Trainer callback), the time from the end of step 1 to the end of the last step
(the first step's one-time costs are left out on both sides) and the tokens of those steps (the same
rows on both sides): tokens/s on the wall clock and per CPU-second of the process (one thread: its
compute, whatever else the shared machine runs); medians over rounds; ratio kexa / TRL (target >= 1.5).
kexa's time includes building its packed rows; TRL packs before training. Held-out loss: both
exported model folders scored by one function (kexa's model, assistant-token CE over the held-out
conversations, each alone); the relative gap (target <= 2%). TRL uses transformers'
`experts_implementation="grouped_mm"` (its batched MoE path) and sdpa attention; both are recorded,
with the load average. The shared 2-core machine makes wall-clock numbers move with other people's
load; the alternating ratio, and the CPU-time ratio, are what to trust.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sft_vs_trl.py            # writes benchmarks/results/sft_vs_trl.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sft_vs_trl.py --rounds 1 --train 24 --json /tmp/x.json   # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
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
SOURCE = "chats"  # the recipe's source name (it seeds the file's permutation)


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


def kexa_stream(work: Path, seq_len: int, seed: int, n_train: int) -> tuple[list, list[list]]:
    """(the training conversations in the order `kexa sft` draws them, its packed rows in training order):
    the stage's own classes (ListSource, PackedConversations) built as `kexa.train.sft.build_data` builds
    them for this script's recipe (one file source "chats", buffer = the whole file: one epoch)."""
    from kexa.data.sft_pack import ListSource, PackedConversations
    from kexa.tokenizer import Tokenizer
    items = rendered(work, "train", seq_len)
    source = ListSource(SOURCE, items, seed)
    drawn = [source.draw(None) for _ in items]  # epoch 0's permutation (ListSource ignores the rng)
    stream = PackedConversations([ListSource(SOURCE, items, seed)], [1.0], seq_len, 1,
                                 Tokenizer.from_pretrained(work / "base").pad_id, seed=seed, buffer=n_train)
    return drawn, stream.rows


def row_key(conversations) -> tuple:
    """A packed row as the multiset of its conversations' token sequences (order-free)."""
    return tuple(sorted(tuple(ids) for ids in conversations))


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
def run_trl(work: Path, out: Path, seq_len: int, lr: float, seed: int, n_train: int) -> dict:
    import torch
    torch.set_num_threads(1)
    from datasets import Dataset
    from transformers import AutoTokenizer, ExaoneMoeForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    drawn, kexa_rows = kexa_stream(work, seq_len, seed, n_train)
    dataset = Dataset.from_list([{"input_ids": it.ids, "assistant_masks": it.mask} for it in drawn])
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

    class InKexaOrder(SFTTrainer):
        """SFTTrainer whose sampler serves its packed rows in the order `kexa sft` trains on the same rows."""
        order: list[int] = []

        def _get_train_sampler(self, train_dataset=None):
            return list(self.order)

    class Clock(TrainerCallback):
        def __init__(self):
            self.wall, self.cpu, self.tokens = [], [], []

        def on_step_end(self, args, state, control, **kw):
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())
            self.tokens.append(state.num_input_tokens_seen)

    clock = Clock()
    trainer = InKexaOrder(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock])
    # TRL's own BFD packing (packing=True) of the conversations in kexa's draw order makes the same rows as
    # kexa's best fit; each kexa row (training order) is found among TRL's by its conversations
    trl_rows = {}
    for i, row in enumerate(trainer.train_dataset):
        cuts = [0, *itertools.accumulate(row["seq_lengths"])]
        trl_rows.setdefault(row_key(row["input_ids"][a:b] for a, b in zip(cuts, cuts[1:])), []).append(i)
    try:
        InKexaOrder.order = [trl_rows[row_key(it.ids for it in r)].pop() for r in kexa_rows]
    except (KeyError, IndexError):
        raise SystemExit("TRL's BFD rows differ from kexa's: cannot align the data order") from None
    if len(InKexaOrder.order) != len(trainer.train_dataset):
        raise SystemExit(f"TRL packed {len(trainer.train_dataset)} rows, kexa {len(kexa_rows)}")
    packed_ok = check_trl_packing(trainer, model)
    trainer.train()
    trainer.save_model(str(out / "model"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"step_end_wall": clock.wall, "step_end_cpu": clock.cpu,
            "step_tokens": [b - a for a, b in zip([0, *clock.tokens], clock.tokens)],
            "losses": losses, "packed_equals_separate": packed_ok,
            "experts_implementation": model.config._experts_implementation,
            "attn_implementation": model.config._attn_implementation, "model_dir": str(out / "model")}


def check_trl_packing(trainer, model, tol: float = 1e-4) -> float:
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
name = "{SOURCE}"
file = "{work / 'train.jsonl'}"
"""
    path = out / "sft_bench.toml"
    path.write_text(recipe)
    return path


def run_kexa(work: Path, out: Path, seq_len: int, lr: float, seed: int, n_train: int) -> dict:
    """`kexa sft` (kexa.train.sft.sft, what the command calls) on this script's recipe; on_step clocks it."""
    import torch
    torch.set_num_threads(1)
    from kexa.train.sft import load_sft_recipe, sft
    steps = len(kexa_stream(work, seq_len, seed, n_train)[1])  # one epoch, one row per step
    recipe = load_sft_recipe(kexa_recipe(work, out, seq_len, lr, seed, steps, n_train))
    clock = {"wall": [], "cpu": [], "targets": [], "losses": []}

    def on_step(m: dict) -> None:
        clock["wall"].append(time.perf_counter())
        clock["cpu"].append(time.process_time())
        clock["targets"].append(m["target_tokens"])
        clock["losses"].append(m["loss"])

    sft(recipe, out / "run", work / "base", quiet=True, on_step=on_step)
    return {"step_end_wall": clock["wall"], "step_end_cpu": clock["cpu"], "step_targets": clock["targets"],
            "losses": clock["losses"], "model_dir": str(out / "run" / "model")}


# ---------------------------------------------------------------------------- the harness
def side(args) -> None:
    """One measured run in this (fresh, one-thread) process; writes its result JSON."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = run_kexa if args.side == "kexa" else run_trl
    result = run(Path(args.work), out, args.seq, args.lr, args.seed, args.train)
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
    ap.add_argument("--side", choices=["kexa", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return side(args)

    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "src"))
    work = Path(args.work)
    setup = prepare(work, args.train, args.heldout, args.seed)
    train_items, held_items = rendered(work, "train", args.seq), rendered(work, "heldout", args.seq)
    epoch_tokens = sum(len(it.ids) for it in train_items)
    epoch_targets = sum(sum(it.mask[1:]) for it in train_items)
    _, kexa_rows = kexa_stream(work, args.seq, args.seed, args.train)
    rows = len(kexa_rows)  # kexa's steps for one epoch (one row per step)
    row_tokens = [sum(len(it.ids) for it in r) for r in kexa_rows]  # per step, both sides
    row_targets = [sum(sum(it.mask[1:]) for it in r) for r in kexa_rows]
    timed_tokens = sum(row_tokens[1:])
    print(f"{len(train_items)} conversations, {epoch_tokens} tokens ({epoch_targets} targets) -> {rows} rows of "
          f"{args.seq + 1}; base {setup['params'] / 1e6:.1f}M parameters", flush=True)

    runs: dict[str, list[dict]] = {"kexa": [], "trl": []}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for name in ("kexa", "trl"):
            out = work / "runs" / f"{name}_{r}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            out.mkdir(parents=True)
            cmd = [sys.executable, __file__, "--side", name, "--work", str(work), "--out", str(out),
                   "--seq", str(args.seq), "--lr", str(args.lr), "--seed", str(args.seed), "--train", str(args.train)]
            proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{name} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            res = json.loads((out / "result.json").read_text())
            # both sides trained the same rows in the same order: checked per step
            if name == "kexa" and res.pop("step_targets") != row_targets:
                raise SystemExit("kexa's per-step target tokens differ from the reconstructed rows")
            if name == "trl" and res.pop("step_tokens") != row_tokens:
                raise SystemExit("TRL's per-step tokens differ from kexa's rows")
            wall, cpu = res.pop("step_end_wall"), res.pop("step_end_cpu")
            res["steps"] = len(wall)
            res["timed_s"] = wall[-1] - wall[0]  # steps 2..N: the first step's one-time costs left out, both sides
            res["tokens_per_s"] = timed_tokens / res["timed_s"]
            res["tokens_per_cpu_s"] = timed_tokens / (cpu[-1] - cpu[0])
            res["heldout_loss"] = heldout_loss(Path(res.pop("model_dir")), held_items)
            runs[name].append(res)
            print(f"round {r} {name:4s}: {res['steps']} steps, {res['tokens_per_s']:.0f} tok/s "
                  f"({res['tokens_per_cpu_s']:.0f} per CPU-s), held-out loss {res['heldout_loss']:.4f}", flush=True)

    med = {n: {k: statistics.median(x[k] for x in runs[n])
               for k in ("tokens_per_s", "tokens_per_cpu_s", "heldout_loss")} for n in runs}
    ratio = med["kexa"]["tokens_per_s"] / med["trl"]["tokens_per_s"]
    cpu_ratio = med["kexa"]["tokens_per_cpu_s"] / med["trl"]["tokens_per_cpu_s"]
    gap = (med["kexa"]["heldout_loss"] - med["trl"]["heldout_loss"]) / med["trl"]["heldout_loss"]
    base_loss = heldout_loss(work / "base", held_items)
    # same rows, same order, same start: the per-step training losses should agree up to rounding drift
    step_gap = [abs(a - b) / b for a, b in zip(runs["kexa"][0]["losses"], runs["trl"][0]["losses"])]
    result = {
        "what": "kexa sft vs TRL SFTTrainer: nano (no MTP), same conversations and tokens, one epoch, fp32, 1 thread",
        "args": {k: v for k, v in vars(args).items() if k not in ("side", "out")},
        "epoch_tokens": epoch_tokens, "epoch_target_tokens": epoch_targets, "kexa_steps": rows,
        "trl_steps": runs["trl"][0]["steps"], "params": setup["params"],
        "trl_experts_implementation": runs["trl"][0]["experts_implementation"],
        "trl_attn_implementation": runs["trl"][0]["attn_implementation"],
        "trl_packed_equals_separate_max_diff": max(x["packed_equals_separate"] for x in runs["trl"]),
        "heldout_loss_before": base_loss,
        "timed_tokens": timed_tokens, "median": med, "tokens_per_s_ratio": ratio, "tokens_per_cpu_s_ratio": cpu_ratio,
        "target_ratio": 1.5, "heldout_loss_rel_gap": gap,
        "target_rel_gap": 0.02, "train_loss_rel_gap_per_step": step_gap,
        "runs": runs,
        "user_file_reader": __import__("kexa.data.conversations", fromlist=["_"]).__file__,
        "torch_threads": 1, "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"kexa / TRL tokens/s: {ratio:.2f}x wall, {cpu_ratio:.2f}x per CPU-second (target >= 1.5x); "
          f"held-out loss kexa {med['kexa']['heldout_loss']:.4f} TRL {med['trl']['heldout_loss']:.4f} (gap {gap:+.2%}, target within 2%; before training {base_loss:.4f})")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
