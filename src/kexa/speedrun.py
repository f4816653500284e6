"""`kexa speedrun`: the whole K-EXAONE recipe at `nano` scale in one command, then its report card.

    data      corpus -> SuperBPE tokenizer -> token shards        (kexa.train.prepare, cached)
    tokenizer the same corpus through plain BPE of the same vocabulary: bytes/token per domain
    pretrain  WSD, 3-stage curriculum over the corpus, synthetic retrieval and the task suite's dialogues
              in both modes (thinking-augmented data), balance loss + expert-bias updates, MTP (kexa pretrain)
    extend    context extension in two stages (8x, 32x), each gated by NIAH (kexa extend)
    sft       supervised fine-tuning of the extended model, reasoning on and off, on kexa.tasks
              (kexa sft): held-out accuracy by task x mode and template compliance, before/after
    rl        RL with verifiable rewards from the SFT model (kexa rl: AGAPO, truncated IS, zero-variance
              filtering): reward per step, held-out accuracy by task family before/after
    preference preference learning from the RL model (kexa preference: GROUPER on rule rewards): held-out
              score per domain and per reward part, before/after
    evaluate  the final model (the last post-training stage's): held-out loss of every stage's model,
              decode tok/s plain vs MTP-speculative, KV-cache bytes, expert loads, samples -> RUN/eval.json
    eval      kexa eval run (math, mcq, ifeval, translation, agentic) on every stage's model, both modes
              -> RUN/eval/results.json (harness format + "stages"): the report's suite x stage x mode grid
    targets   the capability targets on the final model (kexa.eval.targets: addition and 8-pair lookup per
              language, compliance both modes, tool-call validity, NIAH at 8x with 50 cases, RL gain with
              its interval, MTP speed-up, a check through transformers) -> RUN/targets.json
    chat      `kexa serve` on RUN/model and a conversation through its chat page in headless Chromium
              (kexa.serve.screenshot) -> RUN/chat.png + RUN/chat.json (skipped, with the reason, without a browser)
    report    RUN/report.md + PNGs (kexa.report; `kexa report RUN` redoes it from the logs)

Idempotent: RUN/stages.json records each finished stage with its wall time and summary; a stage is
skipped when it is recorded *and* its output still validates (model folders load, JSON parses);
a missing or corrupted output is redone together with every later stage (extend, sft, rl and preference,
which train from the previous stage's model, restart whole: their checkpoints belong to the old start). `--fresh`
redoes all (the data cache under cache/ is kept: it is keyed by content). A failing stage prints its name, the
cause and how to resume. RUN/model/ is the final model (HF layout + tokenizer + chat template): the
model of the last model-producing stage in STAGES (today `preference`); the run's last line says how to chat
with it (`kexa serve --model RUN/model`, then open the page).

The stages are one table, STAGES (bottom of this file). A model-producing stage is one entry there plus
its function and its config in SpeedrunConfig (stage_rl is the pattern):

    def stage_rl(ctx):                                   # init from the model before it in the table
        result = rl(load_rl_recipe(ctx.cfg.rl, ctx.cfg.rl_overrides), ctx.run / "rl",
                    ctx.model_before("rl"))
        return {"steps": result.step, ...}               # summary: stages.json and the stage's line
    Stage("rl", "RL with verifiable rewards (AGAPO)", stage_rl,
          lambda r: _loads(r / "rl" / "model") and ..., model="rl/model"),   # before "evaluate"

`model=` marks the stage's output model: the next model-producing stage starts from it, and the
last one becomes RUN/model (evaluated by `evaluate`), and `eval` evaluates every such stage's model
(a new post-training stage goes before `evaluate`, so `eval` covers it with no change).

    kexa speedrun                      # nano: ~25 min on 2 cores before SFT; SFT, RL, preference not yet timed on nano
    kexa speedrun --quick              # tiny: 96 s with a cold data cache on a shared 2-core machine
                                       # (benchmarks/speedrun_quick.py; SFT 13 s, rl 5 s, preference 4 s, eval 7 s)
    kexa speedrun --run-dir runs/x --fresh
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[2]
STAGES_FILE = "stages.json"


@dataclass
class SpeedrunConfig:
    recipe: Path  # pre-training recipe (TOML)
    extend: Path  # context-extension config (TOML)
    recipe_overrides: list[str] = field(default_factory=list)
    extend_overrides: list[str] = field(default_factory=list)
    extend_stage_steps: list[int] | None = None  # per-stage optimiser steps (None: the config's)
    decode_new_tokens: int = 64
    decode_repeats: int = 3
    speculative_k: tuple[int, ...] = (1, 2)
    sft: Path = REPO / "configs/sft_quick.toml"  # SFT recipe (TOML, as `kexa sft --config`)
    sft_overrides: list[str] = field(default_factory=list)
    rl: Path = REPO / "configs/rl_quick.toml"  # RL recipe (TOML, as `kexa rl --config`): AGAPO from the SFT model
    rl_overrides: list[str] = field(default_factory=list)
    preference: Path = REPO / "configs/preference_quick.toml"  # `kexa preference --config`: GROUPER from the RL model
    preference_overrides: list[str] = field(default_factory=list)
    # eval stage: `kexa eval run` on every stage's model, both modes, the report's sampling settings;
    # limit = items per suite, max_tokens = every suite's generation budget (per turn for agentic)
    eval_suites: tuple[str, ...] = ("math", "mcq", "ifeval", "translation", "agentic")
    eval_limit: int = 2
    eval_max_tokens: int = 16
    eval_options: dict = field(default_factory=lambda: {"agentic": {"max_steps": 2},
                                                        "translation": {"directions": "en-ko,ko-en"}})
    # targets stage (kexa.eval.targets): held-out problems per language for addition / lookup, per family
    # and language for compliance, tool-use prompts per language, NIAH cases at 8x; outside = the
    # transformers check
    targets: dict = field(default_factory=lambda: {"n": 2, "compliance_n": 1, "tool_n": 1, "niah_cases": 5,
                                                   "max_new_tokens": 32, "outside": True})
    # chat stage: these (prompt, thinking) turns through `kexa serve` and the chat page in headless Chromium
    # (kexa.serve.screenshot) -> RUN/chat.png; () skips the stage's browser run
    chat_turns: tuple = (("What is 47 + 38?", True),
                         ("다음 목록에서 하늘의 번호는 무엇인가요?\n바다: 318\n하늘: 752\n구름: 164\n들판: 930", False))
    chat_max_tokens: int = 256

    @classmethod
    def named(cls, quick: bool) -> "SpeedrunConfig":
        if quick:  # tiny model, shortened extension: the smoke run (a few minutes)
            return cls(REPO / "configs/tiny.toml", REPO / "configs/extend_tiny.toml",
                       extend_overrides=["extend.max_rounds=1"], extend_stage_steps=[60, 20],
                       decode_new_tokens=32, decode_repeats=2, sft=REPO / "configs/sft_quick.toml",
                       rl=REPO / "configs/rl_quick.toml", preference=REPO / "configs/preference_quick.toml",
                       eval_limit=2, eval_max_tokens=16,
                       targets={"n": 2, "compliance_n": 1, "tool_n": 1, "niah_cases": 5, "max_new_tokens": 32,
                                "outside": True}, chat_max_tokens=32)
        # nano: configs/nano_speedrun.toml (800 steps of 8 x 256 tokens: corpus, synthetic retrieval and the
        # task suite's dialogues) and one round per extension stage
        return cls(REPO / "configs/nano_speedrun.toml", REPO / "configs/extend_nano_256.toml",
                   recipe_overrides=[],
                   extend_overrides=["extend.max_rounds=1", "niah.samples=1", "niah.depths=[0.0, 0.5, 1.0]",
                                     'niah.languages=["en", "ko"]'],
                   extend_stage_steps=[20, 6],
                   # SFT: configs/sft_nano.toml's sources and optimiser, 80 steps of one 4x1024-token
                   # micro-batch (the base already knows the task formats; tool dialogues are new), one
                   # evaluation at the end
                   sft=REPO / "configs/sft_nano.toml",
                   sft_overrides=["train.steps=80", "data.grad_accum=1", "train.eval_every=0",
                                  "train.save_every=20", "sft.eval_n=2", 'sft.eval_langs=["en", "ko"]',
                                  "sft.eval_max_new_tokens=160"],
                   # RL: configs/rl_nano.toml's objective on the two skills the targets name (addition,
                   # 8-pair lookup), 10 rollouts of 8 prompts x 8 samples, 2 steps each; held-out
                   # evaluation 10 problems per task x language x mode before and after
                   rl=REPO / "configs/rl_nano.toml",
                   rl_overrides=["train.steps=20", "train.eval_every=0", "train.save_every=4", "optim.lr=5e-5",
                                 "rl.prompts_per_rollout=8", "rl.max_response_tokens=192", "rl.eval_n=10",
                                 "rl.eval_max_new_tokens=192",
                                 'source=[{name = "arith", task = "arith", tiers = [1]}, '
                                 '{name = "lookup", task = "lookup", tiers = [1]}]'],
                   # preference: configs/preference_nano.toml cut to 6 GROUPER steps, 128-token replies, its
                   # rule rewards only: the local rubric judge (a frozen copy of the input model reading every
                   # reply under each rubric) took 279 s of a step on nano here, and a nano judge scores noise
                   preference=REPO / "configs/preference_nano.toml",
                   preference_overrides=["train.steps=6", "train.eval_every=0", "train.save_every=3",
                                         "preference.max_new_tokens=128", "preference.eval_n=2",
                                         "preference.eval_max_new_tokens=128", "judge.kind=none",
                                         'reward=[{name = "template", weight = 1.0}, '
                                         '{name = "language", weight = 1.0, domains = ["chat", "creative", "safety", '
                                         '"instruct"]}, {name = "length", weight = 0.5, min_chars = 16, '
                                         'max_chars = 1500, domains = ["chat", "creative", "safety"]}, '
                                         '{name = "task", weight = 2.0}, {name = "safety", weight = 2.0}]'],
                   # eval: 5 items per suite and mode, 160 tokens (a short think block, then the answer)
                   eval_limit=5, eval_max_tokens=160,
                   eval_options={"agentic": {"max_steps": 4}, "translation": {"directions": "en-ko,ko-en"}},
                   # targets: 120 additions and 120 lookups (20 per language), 162 compliance prompts per mode,
                   # 60 tool-use prompts, 50 NIAH cases at 8x
                   targets={"n": 20, "compliance_n": 3, "tool_n": 10, "niah_cases": 50, "max_new_tokens": 256,
                            "outside": True})


@dataclass
class Context:
    run: Path
    cfg: SpeedrunConfig
    state: dict[str, Any]
    recipe: Any = None  # loaded lazily
    data: Any = None  # TrainData, built by the data stage (cached on disk)

    def save_state(self) -> None:
        tmp = self.run / (STAGES_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.run / STAGES_FILE)

    def load_recipe(self):
        if self.recipe is None:
            from .train.recipe import load_recipe
            self.recipe = load_recipe(self.cfg.recipe, self.cfg.recipe_overrides)
        return self.recipe

    def train_data(self):
        if self.data is None:
            from .train.prepare import prepare_data
            self.data = prepare_data(self.load_recipe())
        return self.data

    def model_before(self, name: str) -> Path:
        """The output model of the last model-producing stage before stage `name`: where it starts."""
        names = [s.name for s in STAGES]
        earlier = [s for s in STAGES[:names.index(name)] if s.model]
        if not earlier:
            raise ValueError(f"stage {name!r} has no model-producing stage before it in STAGES")
        return self.run / earlier[-1].model


def final_stage() -> "Stage":
    """The last model-producing stage: its model becomes RUN/model."""
    return [s for s in STAGES if s.model][-1]


# ---------------------------------------------------------------------- stages
def stage_data(ctx: Context) -> dict:
    data = ctx.train_data()
    tokens = {d: s.n_tokens for d, s in data.train.items()}
    return {"vocab_size": data.vocab_size, "train_tokens": tokens, "total_train_tokens": sum(tokens.values()),
            "heldout_tokens": {d: s.n_tokens for d, s in data.heldout.items()}}


def stage_tokenizer(ctx: Context) -> dict:
    """SuperBPE (the recipe's tokenizer) vs plain BPE of the same size, on the held-out split."""
    from .train.prepare import prepare_corpus
    from .tokenizer import Tokenizer, train_bpe
    recipe = ctx.load_recipe()
    cache = Path(recipe.data.cache_dir)
    corpus = prepare_corpus(recipe, cache)
    superbpe = ctx.train_data().tokenizer
    rule = "" if recipe.tokenizer.rule == "superbpe" else f"-{recipe.tokenizer.rule}"
    plain_dir = cache / f"plain-bpe-{corpus.manifest.get('key', 'corpus')[:12]}-{superbpe.vocab_size}{rule}"
    t0 = time.perf_counter()
    if not (plain_dir / "tokenizer.json").exists():
        train_bpe([str(f) for f in corpus.files("train")], vocab_size=superbpe.vocab_size,
                  rule=recipe.tokenizer.rule).save_pretrained(plain_dir)  # the same pre-tokenizer: only superwords differ
    plain = Tokenizer.from_pretrained(plain_dir)
    rows = {}
    for domain in corpus.domains:
        texts = [json.loads(line)["text"] for f in corpus.files("heldout", "jsonl", [domain])
                 for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        s, p = superbpe.stats(texts), plain.stats(texts)
        rows[domain] = {"superbpe_bytes_per_token": s["bytes_per_token"], "bpe_bytes_per_token": p["bytes_per_token"],
                        "gain": s["bytes_per_token"] / p["bytes_per_token"] - 1, "bytes": s["bytes"]}
    mean_gain = statistics.mean(r["gain"] for r in rows.values())
    out = {"vocab_size": superbpe.vocab_size, "domains": rows, "mean_gain": mean_gain,
           "plain_bpe_train_s": time.perf_counter() - t0}
    (ctx.run / "tokenizer_compare.json").write_text(json.dumps(out, indent=2))
    return {"mean_gain": mean_gain, "vocab_size": superbpe.vocab_size}


def stage_pretrain(ctx: Context) -> dict:
    from .train.loop import train
    run = ctx.run / "pretrain"
    if run.exists():  # a partial earlier attempt: resume when a checkpoint exists, else start clean
        from .train import checkpoint as ckpt
        resume = ckpt.latest_checkpoint(run) is not None
    else:
        resume = False
    result = train(ctx.load_recipe(), run, ctx.train_data(), resume=resume)
    if result.interrupted:
        raise KeyboardInterrupt
    last_val = next((r["val_loss"] for r in reversed(result.history) if "val_loss" in r), None)
    return {"steps": result.step, "final_train_loss": result.last_loss, "final_val_loss": last_val,
            "skipped_steps": result.skipped_steps}


def stage_extend(ctx: Context) -> dict:
    from .train.extend import load_config, run_extension
    overrides = [f"extend.base={json.dumps(str(ctx.cfg.recipe))}",
                 f"extend.init_from={json.dumps(str(ctx.run / 'pretrain' / 'model'))}",
                 f"extend.base_overrides={json.dumps(ctx.cfg.recipe_overrides + ['train.plot=false'])}",
                 *ctx.cfg.extend_overrides]
    config = load_config(ctx.cfg.extend, overrides)
    for stage, steps in zip(config.stages, ctx.cfg.extend_stage_steps or []):
        stage.steps = steps
    run = ctx.run / "extend"
    if run.exists():
        shutil.rmtree(run)  # rounds restart their optimiser anyway: redo the stage whole
    result = run_extension(config, run)
    return {"passed": result.passed, "rounds": result.rounds}


def stage_sft(ctx: Context) -> dict:
    """kexa sft from the extended model; its own evaluation (before/after, both modes) lands in
    sft/sft_eval.json + sft/sft_report.md, which the report reuses."""
    from .train.sft import EVAL_FILE, load_sft_recipe, sft
    sr = load_sft_recipe(ctx.cfg.sft, ctx.cfg.sft_overrides)
    run = ctx.run / "sft"
    if run.exists():  # its checkpoints belong to the starting model of an earlier attempt: redo whole
        shutil.rmtree(run)
    result = sft(sr, run, ctx.model_before("sft"))
    if result.interrupted:
        raise KeyboardInterrupt
    ev = json.loads((run / EVAL_FILE).read_text())
    last_val = next((r["val_loss"] for r in reversed(result.history) if "val_loss" in r), None)
    out = {"steps": result.step, "final_train_loss": result.last_loss, "final_val_loss": last_val}
    for when in ("before", "after"):
        if when in ev:
            out[f"accuracy_{when}"] = ev[when]["accuracy_mean"]
            out[f"compliance_{when}"] = ev[when]["compliance"]
    return out


def stage_rl(ctx: Context) -> dict:
    """kexa rl (AGAPO) from the SFT model; its before/after task evaluation lands in rl/rl_eval.json and its
    per-step rollout numbers (reward, filtered fraction, IS truncation, response length) in rl/metrics.jsonl,
    which the report reads."""
    from .train.rl_stage import EVAL_FILE, load_rl_recipe, rl
    run = ctx.run / "rl"
    if run.exists():  # its checkpoints belong to the starting model of an earlier attempt: redo whole
        shutil.rmtree(run)
    result = rl(load_rl_recipe(ctx.cfg.rl, ctx.cfg.rl_overrides), run, ctx.model_before("rl"))
    if result.interrupted:
        raise KeyboardInterrupt
    ev = json.loads((run / EVAL_FILE).read_text())
    steps = _read_metrics(run)
    out = {"steps": result.step, "final_train_loss": result.last_loss,
           "reward_first": steps[0].get("reward_mean") if steps else None,
           "reward_last": steps[-1].get("reward_mean") if steps else None}
    for when in ("before", "after"):
        if when in ev:
            out[f"accuracy_{when}"] = ev[when]["accuracy_mean"]
    return out


def stage_preference(ctx: Context) -> dict:
    """kexa preference (GROUPER) from the RL model; held-out rule scores per domain before/after in
    preference/preference_eval.json, per-step reward parts in preference/metrics.jsonl."""
    from .train.preference import EVAL_FILE, load_preference_recipe, preference
    run = ctx.run / "preference"
    if run.exists():
        shutil.rmtree(run)
    result = preference(load_preference_recipe(ctx.cfg.preference, ctx.cfg.preference_overrides), run,
                        ctx.model_before("preference"))
    if result.interrupted:
        raise KeyboardInterrupt
    ev = json.loads((run / EVAL_FILE).read_text())
    out = {"steps": result.step, "final_train_loss": result.last_loss}
    for when in ("before", "after"):
        if "eval/rule_score" in ev.get(when, {}).get("metrics", {}):
            out[f"rule_score_{when}"] = ev[when]["metrics"]["eval/rule_score"]
    return out


def _read_metrics(run: Path) -> list[dict]:
    """A training run's per-step rows (metrics.jsonl), evaluation-only rows left out."""
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in rows if "loss" in r]


def stage_evaluate(ctx: Context) -> dict:
    from .eval.decode import decode_benchmark
    from .infer.cache import KVCache, full_attention_cache_bytes
    from .info import parameter_counts
    from .model.transformer import KExaone
    from .train.balance import max_violation
    from .train.loop import evaluate
    from .data.loader import heldout_batches
    from .config import ModelConfig

    final = ctx.run / "model"
    if final.exists():
        shutil.rmtree(final)
    last = final_stage()
    shutil.copytree(ctx.run / last.model, final)
    model = KExaone.from_pretrained(final)
    recipe, data = ctx.load_recipe(), ctx.train_data()
    tok = data.tokenizer
    seq = recipe.data.seq_len
    batches = heldout_batches(data.heldout, seq, recipe.data.batch_size, max(recipe.data.eval_batches, 4), 0, 1)
    cpu = torch.device("cpu")
    # short-context held-out loss (pre-training data) of every stage's model: what each stage cost there
    short = {"pretrained": evaluate(KExaone.from_pretrained(ctx.run / "pretrain" / "model"), batches, cpu, "fp32"),
             "extended": evaluate(KExaone.from_pretrained(ctx.run / "extend" / "model"), batches, cpu, "fp32")}
    if last.name not in ("pretrain", "extend"):
        short["final"] = evaluate(model, batches, cpu, "fp32")

    # expert loads of the final model over the held-out batches (one (M, E) heat map)
    loads = None
    with torch.no_grad():
        for _, x, _ in batches:
            out = model(x, compute_mtp=False)
            loads = out.expert_loads if loads is None else loads + out.expert_loads
    vio = max_violation(loads)

    # decode: plain vs MTP self-speculative, alternating, medians (kexa.eval.decode)
    source = data.heldout.get("en") or next(iter(data.heldout.values()))
    prompt = source.window(0, 64).tolist()  # a held-out passage as the prompt
    decode = decode_benchmark(model, prompt, ctx.cfg.decode_new_tokens, ctx.cfg.speculative_k, ctx.cfg.decode_repeats)

    # KV cache: the analytic hybrid figure vs full attention everywhere (nano and the real layout)
    kv = {}
    for name, mc in (("this model", model.config), ("k-exaone-236b", ModelConfig.preset("k-exaone-236b"))):
        kv[name] = [{"tokens": n, "hybrid_bytes": KVCache.analytic_bytes(mc, n, dtype=torch.bfloat16),
                     "full_bytes": full_attention_cache_bytes(mc, n, dtype=torch.bfloat16)}
                    for n in (4096, 32768, 262144)]

    # samples: English and Korean continuations, seeded
    from .infer.engine import Engine
    from .infer.sampling import SamplingParams
    samples = []
    for prompt_text in ("The history of the city", "한국의 수도는", "def fibonacci(n):"):
        res = Engine(model).generate([tok.encode(prompt_text)], SamplingParams(
            max_new_tokens=40, temperature=0.8, top_p=0.95, seed=0, stop_token_ids=[tok.eos_id]))
        samples.append({"prompt": prompt_text, "completion": tok.decode(res.token_ids[0])})

    out = {"final_model": last.name, "params": parameter_counts(model.config), "short_context": short,
           "expert_loads": loads.tolist(), "maxvio_per_layer": vio.tolist(), "decode": decode,
           "kv_cache": kv, "samples": samples}
    (ctx.run / "eval.json").write_text(json.dumps(out, indent=2))
    return {"val_loss_pretrained": short["pretrained"].get("val_loss"),
            "val_loss_extended": short["extended"].get("val_loss"),
            **({"val_loss_final": short["final"].get("val_loss")} if "final" in short else {}),
            "speculative_speedup": {k: v["speedup"] for k, v in decode["speculative"].items()}}


EVAL_DIR = "eval"  # RUN/eval/results.json: the harness's format plus "stages"; RUN/eval/<stage>/: each model's run


def stage_eval(ctx: Context) -> dict:
    """`kexa eval run` (kexa.eval.harness) on the model of every model-producing stage before this one, both
    modes, the report's settings (temperature 1.0, top-p 0.95, MTP off), `eval_limit` items per suite.
    RUN/eval/results.json is the harness's result of the final model ({"suites", "settings"}) plus
    "stages": {stage: that stage's model's result}: the Table-3-style grid of the report. Each stage's items
    live in RUN/eval/<stage>/ and resume after an interruption; they are thrown away when the stage that
    made the model was redone since (its record in stages.json changed)."""
    from .client import EngineClient
    from .eval.harness import run_eval
    cfg, out = ctx.cfg, ctx.run / EVAL_DIR
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for stage in STAGES[:[s.name for s in STAGES].index("eval")]:
        if not stage.model or not _loads(ctx.run / stage.model):
            continue
        where = out / stage.name
        made_by = json.loads(json.dumps({k: ctx.state.get(stage.name, {}).get(k) for k in ("wall_s", "summary")}))
        if where.exists() and (not _json(where / "model_stage.json")
                               or json.loads((where / "model_stage.json").read_text()) != made_by):
            shutil.rmtree(where)  # items of an older model of this stage
        where.mkdir(parents=True, exist_ok=True)
        (where / "model_stage.json").write_text(json.dumps(made_by))
        print(f"eval: {stage.name} model ({stage.model}), suites {', '.join(cfg.eval_suites)}, both modes", flush=True)
        client = EngineClient.from_folder(ctx.run / stage.model)
        client.name = stage.model  # results.json's target: which stage's model, not the folder's last name
        results[stage.name] = run_eval(client, list(cfg.eval_suites), ["reasoning", "plain"], where,
                                       limit=cfg.eval_limit, max_tokens=cfg.eval_max_tokens,
                                       suite_options=cfg.eval_options, progress=lambda m: None)
    if not results:
        raise ValueError("no stage model to evaluate")
    final = results[list(results)[-1]]
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps({**final, "stages": results}, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(out / "results.json")
    per_suite = [m for r in results.values() for m in r["suites"].values()]
    return {"models": list(results), "scored": sum(_over_modes(m, "n") for m in per_suite),
            "errors": sum(_over_modes(m, "errors") for m in per_suite),
            "final": {suite: next(iter(m.values())) for suite, m in final["suites"].items()}}


TARGETS_FILE = "targets.json"


def stage_targets(ctx: Context) -> dict:
    """kexa.eval.targets on the final model (RUN/model): the capability targets, each measured here, with
    its interval, into RUN/targets.json; the report's Targets section reads it."""
    from .eval.niah import haystack_from_shards
    from .eval.targets import measure_targets
    recipe, data = ctx.load_recipe(), ctx.train_data()
    result = measure_targets(ctx.run / "model", ctx.run, niah_length=8 * recipe.data.seq_len,
                             haystack=haystack_from_shards(list(data.heldout.values())), **ctx.cfg.targets)
    tmp = ctx.run / (TARGETS_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(ctx.run / TARGETS_FILE)
    return {"met": sum(1 for r in result["targets"] if r["met"]),
            "missed": [r["target"] for r in result["targets"] if r["met"] is False],
            **{r["target"]: r["value"] for r in result["targets"]}}


CHAT_FILE = "chat.json"


def stage_chat(ctx: Context) -> dict:
    """The final model served by `kexa serve` and talked to through the chat page (headless Chromium):
    RUN/chat.png and the conversation in RUN/chat.json. A machine without Playwright or Chromium records
    why (the report says so) instead of failing the run."""
    from .serve.screenshot import ScreenshotUnavailable, chat_screenshot
    if not ctx.cfg.chat_turns:
        result = {"skipped": "no chat turns configured"}
    else:
        try:
            result = chat_screenshot(ctx.run / "model", ctx.run / "chat.png", list(ctx.cfg.chat_turns),
                                     max_tokens=ctx.cfg.chat_max_tokens)
            result["png"] = "chat.png"  # relative to RUN, as the report links it
        except ScreenshotUnavailable as e:
            result = {"skipped": str(e)}
    (ctx.run / CHAT_FILE).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return {"skipped": result["skipped"]} if "skipped" in result else {"png": result["png"], "seconds": result["seconds"]}


def _over_modes(metrics: dict, key: str) -> int:
    """A count summed over the modes a suite ran in (`<mode>/<key>`; the plain key when it ran in one)."""
    per_mode = [v for k, v in metrics.items() if k.endswith(f"/{key}")]
    return sum(per_mode) if per_mode else metrics[key]


def _eval_valid(run: Path) -> bool:
    if not _json(run / EVAL_DIR / "results.json"):
        return False
    got = json.loads((run / EVAL_DIR / "results.json").read_text())
    return isinstance(got.get("stages"), dict) and bool(got["stages"]) and "suites" in got


def stage_report(ctx: Context) -> dict:
    from .report import write_report
    path = write_report(ctx.run)
    return {"report": str(path)}


# ---------------------------------------------------------------------- validation of outputs
def _loads(path: Path) -> bool:
    try:
        from .model.hf import checkpoint_files, read_config, scan
        read_config(path)
        scan(checkpoint_files(path))
        return (path / "tokenizer.json").exists()
    except Exception:
        return False


def _json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except Exception:
        return False


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[Context], dict]
    valid: Callable[[Path], bool]
    model: str | None = None  # the model folder it produces, relative to RUN (the next stage starts from it)


STAGES = [
    Stage("data", "corpus -> SuperBPE tokenizer -> token shards", stage_data, lambda r: True),
    Stage("tokenizer", "SuperBPE vs plain BPE, bytes per token", stage_tokenizer,
          lambda r: _json(r / "tokenizer_compare.json")),
    Stage("pretrain", "pre-training: WSD, curriculum (corpus, retrieval, task dialogues), MoE balance, MTP", stage_pretrain,
          lambda r: _loads(r / "pretrain" / "model"), model="pretrain/model"),
    Stage("extend", "context extension gated by needle-in-a-haystack", stage_extend,
          lambda r: _loads(r / "extend" / "model") and (r / "extend" / "extend_log.jsonl").exists(),
          model="extend/model"),
    Stage("sft", "supervised fine-tuning, reasoning on and off (kexa.tasks)", stage_sft,
          lambda r: _loads(r / "sft" / "model") and _json(r / "sft" / "sft_eval.json"), model="sft/model"),
    Stage("rl", "RL with verifiable rewards (AGAPO), from the SFT model", stage_rl,
          lambda r: _loads(r / "rl" / "model") and _json(r / "rl" / "rl_eval.json"), model="rl/model"),
    Stage("preference", "preference learning (GROUPER), from the RL model", stage_preference,
          lambda r: _loads(r / "preference" / "model") and _json(r / "preference" / "preference_eval.json"),
          model="preference/model"),
    Stage("evaluate", "evaluation: loss, decode speed, KV cache, samples", stage_evaluate,
          lambda r: _json(r / "eval.json") and _loads(r / "model")),
    Stage("eval", "evaluation suites x every stage's model x both modes (kexa eval run)", stage_eval, _eval_valid),
    Stage("targets", "capability targets of the final model (kexa.eval.targets)", stage_targets,
          lambda r: _json(r / TARGETS_FILE)),
    Stage("chat", "the chat page talking to the final model (kexa serve + headless Chromium)", stage_chat,
          lambda r: _json(r / CHAT_FILE)),
    Stage("report", "report card", stage_report, lambda r: (r / "report.md").exists()),
]


def banner(i: int, stage: Stage) -> None:
    line = "═" * 78
    print(f"\n{line}\n  [{i + 1}/{len(STAGES)}] {stage.name}: {stage.title}\n{line}", flush=True)


def speedrun(run_dir: str | Path, cfg: SpeedrunConfig, fresh: bool = False) -> dict:
    run = Path(run_dir)
    if fresh and run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    state = json.loads((run / STAGES_FILE).read_text()) if _json(run / STAGES_FILE) else {}
    ctx = Context(run, cfg, state)
    redo = False  # once a stage is redone, every later stage is redone too
    t_all = time.perf_counter()
    for i, stage in enumerate(STAGES):
        done = stage.name in state and state[stage.name].get("status") == "done"
        if done and not redo and stage.valid(run):
            print(f"[{i + 1}/{len(STAGES)}] {stage.name}: done ({state[stage.name]['wall_s']:.0f}s), skipped")
            continue
        if done:
            print(f"[{i + 1}/{len(STAGES)}] {stage.name}: recorded as done but its output is missing or invalid: redoing")
        redo = True
        banner(i, stage)
        t0 = time.perf_counter()
        try:
            summary = stage.run(ctx)
        except KeyboardInterrupt:
            print(f"\nspeedrun interrupted in stage '{stage.name}'. Resume with: kexa speedrun --run-dir {run}",
                  file=sys.stderr)
            raise
        except Exception as e:
            traceback.print_exc()
            raise SpeedrunError(f"stage '{stage.name}' failed: {type(e).__name__}: {e}\n"
                                f"fix the cause, then resume with: kexa speedrun --run-dir {run} "
                                f"(finished stages are kept)") from e
        wall = time.perf_counter() - t0
        gates = summary.get("passed")  # a gated stage (extend) reports {gate: met}
        state[stage.name] = {"status": "done", "wall_s": wall, "summary": summary,
                             **({"gates_met": all(gates.values())} if isinstance(gates, dict) else {})}
        ctx.save_state()
        print(stage_line(stage.name, wall, summary), flush=True)
    print(f"\nspeedrun finished in {time.perf_counter() - t_all:.0f}s (this invocation). Report: {run / 'report.md'}\n"
          f"Chat with the model:  kexa serve --model {run / 'model'}   then open http://127.0.0.1:8000/")
    return state


class SpeedrunError(RuntimeError):
    pass


def stage_line(name: str, wall: float, summary: dict) -> str:
    """The line printed after a stage: ✓ when it finished and every gate it reports (summary["passed"],
    {gate: met}) was met; ✗ with the unmet gates when it finished without meeting them (the run goes
    on: later stages still produce the report, which shows the gate results)."""
    gates = summary.get("passed")
    unmet = [g for g, ok in gates.items() if not ok] if isinstance(gates, dict) else []
    details = ", ".join(f"{k}={_short(v)}" for k, v in summary.items())
    if unmet:
        return f"✗ {name} in {wall:.0f}s, gates not met: {', '.join(unmet)} ({details})"
    return f"✓ {name} in {wall:.0f}s: {details}"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in list(v.items())[:4]) + ("…}" if len(v) > 4 else "}")
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kexa speedrun", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model and short stages: a few minutes")
    ap.add_argument("--fresh", action="store_true", help="redo every stage (the data cache is kept)")
    ap.add_argument("--run-dir", default=None, help="output folder (default runs/speedrun or runs/speedrun-quick)")
    args = ap.parse_args(argv)
    cfg = SpeedrunConfig.named(args.quick)
    run_dir = args.run_dir or str(REPO / "runs" / ("speedrun-quick" if args.quick else "speedrun"))
    recipe_threads = None
    try:
        from .train.recipe import load_recipe
        recipe_threads = load_recipe(cfg.recipe, cfg.recipe_overrides).train.threads
    except Exception:
        pass
    if recipe_threads:  # process-wide: set by the command, not the library
        torch.set_num_threads(recipe_threads)
    try:
        speedrun(run_dir, cfg, fresh=args.fresh)
    except SpeedrunError as e:
        print(f"kexa speedrun: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
