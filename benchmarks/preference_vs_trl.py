"""Preference: GROUPER (`kexa preference`, whole groups) vs TRL's DPO (sigmoid) and CPO-SimPO on (best, worst)
pairs drawn from the same sampled groups and scored by the same rewards.

One run, three methods, one start model:
1. kexa: `kexa.train.preference.preference` with configs/preference_tiny.toml (rule rewards; --steps steps of
   P prompts x G on-policy responses). Every group it samples is recorded with its scores.
2. From those groups (zero-variance ones dropped, as GROUPER drops them) one pair each: the best-scored
   response as `chosen`, the worst as `rejected`, under the rendered prompt (chat template, generation prompt).
3. TRL `DPOTrainer` (loss_type "sigmoid", beta 0.1, a frozen reference copy) and `CPOTrainer` (loss_type
   "simpo", cpo_alpha 1: CPO-SimPO) each train one epoch over those pairs from the same start model (HF
   ExaoneMoeForCausalLM, fp32, CPU), batch = P pairs, the same learning rate and AdamW as the kexa recipe.
All three resulting models are scored by one function (`evaluate_heldout`: greedy replies to the held-out
prompts; rule rewards, refusal / over-refusal, task accuracy). Reported: held-out rule score before/after per
method, its gain, the wall and CPU seconds of training (kexa's include its own sampling and scoring, which the
offline pair methods get for free from kexa's groups) and the gain per wall-second.

The start model (default) is the tiny preset with random weights and no MTP block (transformers' class has
none) and a BPE tokenizer trained on the prompt sets: at that scale the gains are noise, and what the run
shows is the machinery and the costs of each method. Pass --init-from a trained (SFT/RL) model folder without
MTP for a quality comparison.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/preference_vs_trl.py      # writes benchmarks/results/preference_vs_trl.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "preference_vs_trl.json"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_model(work: Path) -> Path:
    """A tiny random model without MTP and a BPE tokenizer trained on the prompt sets and task prompts."""
    import torch

    import kexa.tasks
    from kexa import KExaone, ModelConfig
    from kexa.data.prompts import BUILTIN
    from kexa.tokenizer import train_bpe
    folder = work / "start"
    if (folder / "config.json").exists():
        return folder
    texts = [line for p in BUILTIN.values() for line in p.read_text("utf-8").splitlines()]
    rng = random.Random(0)
    for name in ("instruct", "tool", "arith"):
        task = kexa.tasks.get(name)
        texts += [json.dumps(task.sample(rng, lang=None).conversation(), ensure_ascii=False) for _ in range(300)]
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(texts) * 3, "utf-8")
    tok = train_bpe([str(corpus)], vocab_size=1500)
    torch.manual_seed(0)
    KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size, num_nextn_predict_layers=0)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_kexa(pr, folder: Path, work: Path) -> tuple[dict, list[dict]]:
    """The kexa stage, recording every sampled group (prompt text, responses, scores)."""
    from kexa.train import preference as P
    groups: list[dict] = []
    original = P.PreferenceBatches.next_batch

    def recording(self):
        batch = original(self)
        groups.extend(self.last_groups)
        return batch

    P.PreferenceBatches.next_batch = recording
    t0, c0 = time.perf_counter(), cpu_s()
    P.preference(pr, work / "kexa", folder, quiet=True)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    P.PreferenceBatches.next_batch = original
    report = json.loads((work / "kexa" / P.EVAL_FILE).read_text())
    train_wall = sum(json.loads(x)["step_s"] for x in (work / "kexa" / "metrics.jsonl").read_text().splitlines())
    return {"train_wall_s": train_wall, "stage_wall_s": wall, "stage_cpu_s": cpu, "before": report["before"]["metrics"],
            "after": report["after"]["metrics"], "model": str(work / "kexa" / "model")}, groups


def pairs_of(groups: list[dict]) -> list[dict]:
    out = []
    for g in groups:
        scores = g["scores"]
        if max(scores) == min(scores):
            continue  # zero variance: no preference (GROUPER skips it too)
        best, worst = scores.index(max(scores)), scores.index(min(scores))
        out.append({"prompt": g["prompt"], "chosen": g["texts"][best], "rejected": g["texts"][worst]})
    return out


def run_trl(kind: str, folder: Path, pairs: list[dict], work: Path, lr: float, batch: int, seed: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, ExaoneMoeForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = ExaoneMoeForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="sdpa",
                                                 experts_implementation="grouped_mm")
    for name, p in model.named_parameters():  # the router stays frozen, as in kexa's stage
        if name.endswith("mlp.gate.weight"):
            p.requires_grad_(False)
    common = dict(output_dir=str(work / kind / "trainer"), per_device_train_batch_size=batch, num_train_epochs=1,
                  learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                  max_grad_norm=1.0, optim="adamw_torch", bf16=False, fp16=False, use_cpu=True, seed=seed,
                  logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
                  max_length=1024)
    data = Dataset.from_list(pairs)
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer
        trainer = DPOTrainer(model=model, args=DPOConfig(loss_type="sigmoid", beta=0.1, **common),
                             train_dataset=data, processing_class=tokenizer)
    else:
        from trl.experimental.cpo import CPOConfig, CPOTrainer
        trainer = CPOTrainer(model=model, args=CPOConfig(loss_type="simpo", cpo_alpha=1.0, **common),
                             train_dataset=data, processing_class=tokenizer)
    t0, c0 = time.perf_counter(), cpu_s()
    trainer.train()
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    out = work / kind / "model"
    trainer.model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    from kexa.tokenizer import Tokenizer
    Tokenizer.from_pretrained(folder).save_pretrained(out)  # kexa's tokenizer files beside the HF weights
    return {"train_wall_s": wall, "train_cpu_s": cpu, "steps": trainer.state.global_step, "model": str(out),
            "experts_implementation": model.config._experts_implementation}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/kexa_preference_vs_trl")
    ap.add_argument("--init-from", help="a start model folder without MTP (default: a tiny random one)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from kexa.model.transformer import KExaone
    from kexa.tokenizer import Tokenizer
    from kexa.train import preference as P
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("kexa", "dpo", "cpo_simpo"):
        shutil.rmtree(work / sub, ignore_errors=True)
    folder = Path(args.init_from) if args.init_from else start_model(work)
    pr = P.load_preference_recipe(ROOT / "configs" / "preference_tiny.toml",
                                  [f"train.steps={args.steps}", "train.save_every=0", "preference.eval_n=2"])
    kexa, groups = run_kexa(pr, folder, work)
    pairs = pairs_of(groups)
    cfg = pr.preference
    results = {"kexa_grouper": kexa, "groups": len(groups), "pairs": len(pairs),
               "recipe": {"steps": args.steps, "P": cfg.prompts_per_step, "G": cfg.group_size,
                          "lr": pr.recipe.optim.lr, "max_new_tokens": cfg.max_new_tokens},
               "start": "tiny random (no MTP)" if not args.init_from else str(folder),
               "load_avg": os.getloadavg()}
    # one scorer for every model: the kexa stage's own held-out evaluation
    tokenizer = Tokenizer.from_pretrained(folder)
    pools, heldout = P.build_pools(pr)
    funcs, weights = P.build_rewards(pr, {})
    rows = P.heldout_rows(pr, heldout, pools)
    from kexa.train.sft import resolve_task
    tasks = {name: resolve_task(name) for name in cfg.eval_tasks}
    for kind in ("dpo", "cpo_simpo"):
        r = run_trl(kind, folder, pairs, work, pr.recipe.optim.lr, cfg.prompts_per_step, pr.recipe.train.seed)
        r["after"] = P.evaluate_heldout(KExaone.from_pretrained(r["model"]), tokenizer, pr, rows, funcs, weights,
                                        tasks)["metrics"]
        results[f"trl_{kind}"] = r
    before = kexa["before"]["eval/rule_score"]
    for key in ("kexa_grouper", "trl_dpo", "trl_cpo_simpo"):
        r = results[key]
        r["rule_score_gain"] = r["after"]["eval/rule_score"] - before
        r["gain_per_train_wall_s"] = r["rule_score_gain"] / r["train_wall_s"]
    results["rule_score_before"] = before
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    for key in ("kexa_grouper", "trl_dpo", "trl_cpo_simpo"):
        r = results[key]
        print(f"{key:15s} rule score {before:.3f} -> {r['after']['eval/rule_score']:.3f} "
              f"(gain {r['rule_score_gain']:+.3f}) train {r['train_wall_s']:.1f}s wall")
    print(f"{len(groups)} groups, {len(pairs)} pairs; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
