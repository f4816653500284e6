"""`kexa rl`: RL with verifiable rewards — AGAPO (kexa.train.rl) on the shared loop, rollouts through kexa's engine.

    kexa rl --config configs/rl_tiny.toml --init-from runs/tiny-sft/model --run-dir runs/tiny-rl
    kexa rl --config configs/rl_nano.toml --init-from runs/nano-sft/model --run-dir runs/nano-rl --steps 40
    kexa rl ... --resume                                    # after Ctrl-C / SIGTERM: bitwise the same run

One rollout batch: P prompts drawn from the recipe's task mixture (each in reasoning mode with probability
`reasoning_ratio`, else non-reasoning), G samples each, ALL P·G generated in one engine call (temperature /
top-p from the recipe: 1.0 / 0.95, the report's), the behaviour policy μ's log-prob of every sampled token
recorded at generation (`Engine.generate(..., logprobs=True)`). Rewards: the task's verifier (1/0, read after
`</think>`), plus optional TRL-signature rewards from kexa.rewards and an LLM judge, summed with weights
(`kexa.rewards.combine`). A response cut at `max_response_tokens` gets reward 0 (`truncation = "zero"`) or
is kept out of the loss (`"mask"`, its reward still counts in its group). Then AGAPO: zero-variance prompts
dropped (fraction logged), leave-one-out advantages z-scored over the kept responses, and the kept responses
shuffled into `steps_per_rollout` optimiser steps x `data.grad_accum` micro-batches: the first step is
on-policy, the later ones off-policy — which the truncated importance weight min(π_θ/μ, C) corrects.
No KL term, no reference model; the router is frozen (router weights take no gradient, expert biases do not
move: `[balance] freeze_router` is forced on) and the loss has no MTP or balance term.

How it sits on the ONE training loop (kexa.train.loop.train): `RLBatches` is the loop's BatchSource — it
generates a new rollout batch whenever its queue of micro-batches runs dry, with the model the loop is
training (so "a rollout every K optimiser steps" needs no loop hook); `AGAPOLoss` is the StepLoss; the
loop's token-weighted accumulation over micro-batches gives exactly AGAPO's normalisation by the response
tokens of the optimiser step's batch. The per-step RL metrics go into metrics.jsonl through the loop's
`step_metrics` hook. Exact resume: the source's state (prompt RNG, rollout counter — the engine's sampling
seed derives from it —, the pending micro-batches of a half-used rollout batch and their metrics) is saved
with each checkpoint.

Rollout source: one interface, shared with `kexa preference` (kexa.train.group_rollout: `RolloutSource`:
generate(prompts, params) -> token ids + log-probs; sync(model) after each optimiser step). `EngineRollouts` is
the in-process engine over the trainer's own weights (sync is nothing). A vLLM/SGLang server path fits the same interface (docs/rl.md: weight sync, server log-probs, C).

metrics.jsonl per step (beside the loop's loss, lr, grad_norm, tok_per_s, ...): rollout (batch index),
reward_mean, reward/<task>, accuracy, accuracy/<task>, filtered_frac, adv_abs_mean, response_len, truncated_frac,
rollout_tok_per_s, is_weight_mean, is_truncated_frac, log_ratio_mean, update_tok_per_s; every train.eval_every
steps and at the end eval/accuracy/<mode>[/<task>] (kexa.eval.tasks_eval, held-out problems, both modes).
RUN_DIR also gets checkpoints/, model/, rl_eval.json (before/after), rl_report.md, rl_recipe.json.

Exit status: 0 done; 130 / 143 after SIGINT / SIGTERM (a checkpoint was saved); 1 for a bad recipe, model
folder or unreachable judge (one line saying which).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.loader import IGNORE
from ..infer.sampling import SamplingParams
from ..model.transformer import KExaone
from ..tokenizer import specials as S
from ..tokenizer.chat import encode_chat
from . import dist, stage
from .group_rollout import EngineRollouts, Rollout, RolloutSource
from .loop import TrainData, TrainResult, train
from .recipe import Recipe, RecipeError, _section, recipe_from_dict
from .rl import agapo_loss, agapo_stats, group_advantages, token_logprobs, zero_variance_mask
from .stage import (LANGS, SourceConfig, check_model_folder, freeze_router, init_model, overrides_of, read_sources,
                    read_stage, refuse_checkpoints, resolve_task, run_command, stage_parser)
RL_RECIPE = "rl_recipe.json"
EVAL_FILE = "rl_eval.json"
REPORT_FILE = "rl_report.md"
TRUNCATION = ("zero", "mask")
EXTRA_REWARDS = ("format", "language", "math")  # kexa.rewards.<name>_reward whose columns the stage supplies


@dataclass
class RLConfig:
    prompts_per_rollout: int = 8  # P
    group_size: int = 8  # G (TRL: num_generations)
    steps_per_rollout: int = 2  # optimiser steps on one rollout batch (the 2nd on are off-policy)
    clip: float = 2.0  # C, the truncation bound of the importance weight
    level: str = "token"  # "token" (the report's form) | "sequence" (one weight per response)
    unbiased_std: bool = False  # population std in the global normalisation (docs/rl.md)
    temperature: float = 1.0  # the report's sampling settings
    top_p: float = 0.95
    max_prompt_tokens: int = 512
    max_response_tokens: int = 256
    truncation: str = "zero"  # a response cut at max_response_tokens: "zero" reward, or "mask" it out of the loss
    reasoning_ratio: float = 0.5  # prompts rendered in reasoning mode (<think>); the rest non-reasoning
    compile: bool = False  # rollouts through the engine's compiled decode step (Engine(compile=True))
    rewards: dict[str, float] = field(default_factory=dict)  # extra kexa.rewards by name -> weight (task: 1.0)
    eval_n: int = 4  # held-out problems per task x language x mode (0: no evaluation)
    eval_langs: list[str] = field(default_factory=lambda: list(LANGS))
    eval_tier: int = 1
    eval_max_new_tokens: int = 128
    eval_before: bool = True

    def __post_init__(self) -> None:
        errors = []
        for k, low in (("prompts_per_rollout", 1), ("group_size", 2), ("steps_per_rollout", 1), ("max_prompt_tokens", 1),
                       ("max_response_tokens", 1), ("eval_n", 0), ("eval_max_new_tokens", 1)):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                errors.append(f"{k} must be an integer >= {low}, got {v!r}")
        if not (isinstance(self.clip, (int, float)) and self.clip > 0):
            errors.append(f"clip (C) must be > 0, got {self.clip!r}")
        if self.level not in ("token", "sequence"):
            errors.append(f"level must be 'token' or 'sequence', got {self.level!r}")
        if self.truncation not in TRUNCATION:
            errors.append(f"truncation must be one of {TRUNCATION}, got {self.truncation!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            errors.append(f"temperature must be > 0 (rollouts sample), got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            errors.append(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if not 0.0 <= self.reasoning_ratio <= 1.0:
            errors.append(f"reasoning_ratio must lie in [0, 1], got {self.reasoning_ratio!r}")
        unknown = sorted(set(self.rewards) - set(EXTRA_REWARDS))
        if unknown:
            errors.append(f"rewards has unknown name(s) {unknown}; valid: {list(EXTRA_REWARDS)} (the task verifier is always on)")
        unknown = sorted(set(self.eval_langs) - set(LANGS))
        if unknown:
            errors.append(f"eval_langs has unknown language(s) {unknown}; valid: {list(LANGS)}")
        if errors:
            raise ValueError("; ".join(errors))


@dataclass
class JudgeConfig:
    url: str  # an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (kexa serve, vLLM)
    model: str = "kexa"
    weight: float = 1.0
    rubric: str = ""  # a rubric JSON file (kexa.rewards.Rubric.load); empty: the default rubric
    timeout_s: float = 30.0
    retries: int = 2


@dataclass
class RLRecipe:
    recipe: Recipe  # the shared sections ([optim], [schedule], [train], [data] grad_accum, [balance])
    rl: RLConfig
    sources: list[SourceConfig]
    judge: JudgeConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "rl": dataclasses.asdict(self.rl),
                "source": [dataclasses.asdict(s) for s in self.sources],
                "judge": dataclasses.asdict(self.judge) if self.judge else None}


EVAL_KEYS = {"eval_n", "eval_langs", "eval_tier", "eval_max_new_tokens", "eval_before"}  # may change on resume


def load_rl_recipe(path: str | Path | None, overrides: list[str] | None = None) -> RLRecipe:
    """Read an RL recipe ([rl], [[source]] task mixture, optional [judge], and the loop's sections)."""
    d = read_stage(path, overrides)
    rl = _section(RLConfig, d.pop("rl", {}), "rl")
    judge = _section(JudgeConfig, d.pop("judge"), "judge") if "judge" in d else None
    sources = read_sources(d, "an RL", "task = '<kexa.tasks name>'")
    files = [s.name for s in sources if s.file]
    if files:
        raise RecipeError(f"[[source]] {files}: RL needs verifiable task sources (task = '<name>'), not data files")
    freeze_router(d, "AGAPO trains with the router frozen (weights and expert biases)")
    return RLRecipe(recipe_from_dict(d), rl, sources, judge)


# ---------------------------------------------------------------------------- rollouts
@dataclass
class Prompt:
    source: str  # the [[source]] name (the task family in metrics)
    task: Any
    example: Any
    reasoning: bool
    ids: list[int]


def score(prompts: list[Prompt], texts: list[str], extra: dict, weights: dict[str, float]):
    """Rewards of the responses `texts` (one per prompt row) -> (rewards, task accuracy) lists. The task
    verifier reads the answer after `</think>`: in reasoning mode the prompt opened the block, so the reply is
    read as `<think>\\n` + text (a reply that never closes it has no answer)."""
    from ..rewards import combine
    full = [(f"{S.THINK_OPEN}\n{t}" if p.reasoning else t) for p, t in zip(prompts, texts)]
    accuracy = [float(p.task.reward(p.example, t)) for p, t in zip(prompts, full)]
    if not extra:
        return accuracy, accuracy
    funcs = {"task": lambda prompts, completions, **kw: accuracy, **extra}
    columns = {"enable_thinking": [p.reasoning for p in prompts], "language": [p.example.meta.get("lang") for p in prompts],
               "answer": [p.example.answer for p in prompts]}
    totals, _ = combine(funcs, weights, [p.example.messages for p in prompts], full, **columns)
    return [0.0 if r is None else float(r) for r in totals], accuracy


class RLBatches:
    """The loop's BatchSource for RL: micro-batches `(input_ids, labels, {"rollout_logp", "advantages"})` cut
    from the current rollout batch; a new rollout batch is generated (with the model being trained) when they
    run out. labels are the response tokens (-100 on prompt, padding and masked rows); rollout_logp (B, T) is
    log μ at the label positions (0 elsewhere); advantages (B,)."""

    stage = "rl"

    def __init__(self, rr: RLRecipe, tokenizer, tasks: dict[str, Any], rollouts: RolloutSource, seed: int):
        self.rr, self.cfg, self.tokenizer, self.tasks, self.rollouts = rr, rr.rl, tokenizer, tasks, rollouts
        self.seed = seed
        self.rng = random.Random(seed)  # prompts, modes, the shuffle of rows into micro-batches
        self.rollout_index = 0  # rollout batches generated so far; the engine's sampling seed derives from it
        self.pending: list[tuple] = []
        self.current: dict[str, Any] = {}  # the metrics of the rollout batch being trained on
        self.rollout_s = 0.0  # generation time spent inside the current optimiser step
        self.n_micro = rr.rl.steps_per_rollout * rr.recipe.data.grad_accum
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
        from .. import rewards
        self.extra = {name: getattr(rewards, f"{name}_reward") for name in rr.rl.rewards}  # TRL-signature rewards
        self.weights = {"task": 1.0, **rr.rl.rewards}

    def add_reward(self, name: str, fn, weight: float) -> None:
        """Another TRL-signature reward (the LLM judge)."""
        self.extra[name], self.weights[name] = fn, weight

    # -- BatchSource
    def next_batch(self) -> tuple:
        if not self.pending:
            self.pending = self.rollout()
        return self.pending.pop(0)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "rollouts": self.rollout_index, "pending": list(self.pending),
                "current": dict(self.current)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.rollout_index, self.pending, self.current = state["rollouts"], list(state["pending"]), dict(state["current"])

    # -- one rollout batch
    def sample_prompts(self) -> list[Prompt]:
        out = []
        srcs = self.rr.sources
        for _ in range(self.cfg.prompts_per_rollout):
            s = self.rng.choices(srcs, weights=[x.weight for x in srcs])[0]
            task = self.tasks[s.name]
            ex = task.sample(self.rng, lang=self.rng.choice(s.langs), tier=self.rng.choice(s.tiers), split="train")
            reasoning = self.rng.random() < self.cfg.reasoning_ratio
            ids = encode_chat(self.tokenizer, ex.messages, tools=ex.tools, enable_thinking=reasoning,
                              add_generation_prompt=True).ids
            if len(ids) > self.cfg.max_prompt_tokens:
                raise RecipeError(f"a prompt of [[source]] {s.name!r} has {len(ids)} tokens > rl.max_prompt_tokens = "
                                  f"{self.cfg.max_prompt_tokens}; raise it")
            out.append(Prompt(s.name, task, ex, reasoning, ids))
        return out

    def rollout(self) -> list[tuple]:
        cfg, G = self.cfg, self.cfg.group_size
        prompts = self.sample_prompts()
        rows = [p for p in prompts for _ in range(G)]  # (P·G,): the G samples of a prompt are adjacent
        params = SamplingParams(max_new_tokens=cfg.max_response_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                stop_token_ids=(self.tokenizer.eos_id,), seed=self.seed * 1_000_003 + self.rollout_index)
        self.rollout_index += 1
        out = self.rollouts.generate([p.ids for p in rows], params)  # ONE generation for all P·G samples
        self.rollout_s += out.seconds
        texts = [self.tokenizer.decode(t) for t in out.token_ids]
        rewards, accuracy = score(rows, texts, self.extra, self.weights)
        cut = [r == "length" for r in out.finish_reasons]
        if cfg.truncation == "zero":
            rewards = [0.0 if c else r for r, c in zip(rewards, cut)]
        r = torch.tensor(rewards, dtype=torch.float32).view(-1, G)  # (P, G)
        keep = zero_variance_mask(r)  # (P,)
        adv = group_advantages(r, unbiased=cfg.unbiased_std).flatten()  # (P·G,), 0 on dropped prompts
        train_rows = [i for i in range(len(rows)) if keep[i // G] and not (cfg.truncation == "mask" and cut[i])]
        self.rng.shuffle(train_rows)
        self.current = self.metrics(rows, rewards, accuracy, out, keep, adv, train_rows, cut)
        chunks = [train_rows[j::self.n_micro] for j in range(self.n_micro)]
        return [self.collate(c, rows, out, adv) for c in chunks]

    def collate(self, idx: list[int], rows: list[Prompt], out: Rollout, adv: torch.Tensor) -> tuple:
        """Rows idx -> (x (B, T), labels (B, T), {"rollout_logp" (B, T), "advantages" (B,)}), right-padded. An
        empty micro-batch (all prompts filtered) is one prompt with no label: a zero loss, zero gradient."""
        seqs, labels, lps, advs = [], [], [], []
        for i in idx or [None]:
            if i is None:
                ids = rows[0].ids + [self.pad_id]
                seqs.append(ids[:-1])
                labels.append([IGNORE] * (len(ids) - 1))
                lps.append([0.0] * (len(ids) - 1))
                advs.append(0.0)
                continue
            prompt, resp = rows[i].ids, out.token_ids[i]
            seqs.append((prompt + resp)[:-1])  # position t predicts token t+1
            labels.append([IGNORE] * (len(prompt) - 1) + resp)
            lps.append([0.0] * (len(prompt) - 1) + out.logprobs[i])
            advs.append(float(adv[i]))
        T = max(map(len, seqs))
        x = torch.tensor([s + [self.pad_id] * (T - len(s)) for s in seqs])  # (B, T)
        y = torch.tensor([s + [IGNORE] * (T - len(s)) for s in labels])  # (B, T)
        lp = torch.tensor([s + [0.0] * (T - len(s)) for s in lps], dtype=torch.float32)  # (B, T)
        return x, y, {"rollout_logp": lp, "advantages": torch.tensor(advs, dtype=torch.float32)}

    def metrics(self, rows, rewards, accuracy, out: Rollout, keep, adv, train_rows, cut) -> dict[str, Any]:
        n_new = sum(map(len, out.token_ids))
        m: dict[str, Any] = {"rollout": self.rollout_index, "reward_mean": sum(rewards) / len(rewards),
                             "accuracy": sum(accuracy) / len(accuracy), "filtered_frac": float(1 - keep.float().mean()),
                             "adv_abs_mean": float(adv[train_rows].abs().mean()) if train_rows else 0.0,
                             "response_len": n_new / len(rows), "truncated_frac": sum(cut) / len(cut),
                             "rollout_tok_per_s": n_new / max(out.seconds, 1e-9), "rollout_rows": len(rows),
                             "train_rows": len(train_rows)}
        for name in sorted({p.source for p in rows}):
            sel = [i for i, p in enumerate(rows) if p.source == name]
            m[f"reward/{name}"] = sum(rewards[i] for i in sel) / len(sel)
            m[f"accuracy/{name}"] = sum(accuracy[i] for i in sel) / len(sel)
        return m


class AGAPOLoss:
    """The RL StepLoss: agapo_loss of the training forward's log-probs against μ's, per micro-batch (a mean over
    its response tokens; the loop's token weighting makes the step's loss the mean over all of them). No MTP,
    no balance term (router frozen). Accumulates the step's IS statistics for `step_metrics`."""

    def __init__(self, clip: float, level: str):
        self.clip, self.level = clip, level
        self.reset()

    def reset(self) -> None:
        self.sums = {"is_weight_mean": 0.0, "is_truncated_frac": 0.0, "log_ratio_mean": 0.0}
        self.tokens, self.forward_tokens = 0, 0

    def __call__(self, model, batch, mtp_weight: float, balance_coef: float):
        x, y, inputs = batch
        out = model(x, compute_mtp=False)
        mask = y != IGNORE  # (B, T)
        logp = token_logprobs(out.logits, y.clamp_min(0))  # (B, T) fp32
        loss = agapo_loss(logp, inputs["rollout_logp"], inputs["advantages"], mask, self.clip, self.level)
        n = int(mask.sum())
        if n:
            stats = agapo_stats(logp, inputs["rollout_logp"], inputs["advantages"], mask, self.clip)
            for k in self.sums:
                self.sums[k] += stats[k] * n
        self.tokens += n
        self.forward_tokens += x.numel()
        return loss, {"ce": loss.detach()}, out

    def step_metrics(self) -> dict[str, float]:
        n = self.tokens  # 0 when every group of the batch was filtered: no weight to report (null)
        return {k: (v / n if n else None) for k, v in self.sums.items()} | {"update_tokens": n}


# ---------------------------------------------------------------------------- the stage
def check_resume(run_dir: Path, rr: RLRecipe) -> None:
    """The rollout-shaping settings of a resumed run must be those it was started with."""
    stage.check_resume(run_dir, RL_RECIPE, rr.to_dict(), "rl", EVAL_KEYS)


def make_judge(jc: JudgeConfig):
    """The judge reward; checks the endpoint first (JudgeError, one line, when it cannot serve)."""
    from ..rewards import JudgeClient, Rubric, judge_reward
    try:
        rubric = Rubric.load(jc.rubric) if jc.rubric else None
    except ValueError as e:
        raise RecipeError(f"[judge] rubric: {e}") from e
    client = JudgeClient(jc.url, jc.model, rubric, timeout_s=jc.timeout_s, retries=jc.retries)
    client.check()
    return judge_reward(client)


def rl(rr: RLRecipe, run_dir: str | Path, init_from: str | Path, resume: bool = False, quiet: bool = False,
       on_step=None, rollouts: RolloutSource | None = None) -> TrainResult:
    """AGAPO on the model in `init_from`; see the module docstring. rollouts: the RolloutSource (default: the
    in-process engine over the trained model)."""
    from ..eval.tasks_eval import evaluate_tasks, flat_metrics, report_markdown
    from ..tokenizer import Tokenizer
    run_dir = Path(run_dir)
    folder = check_model_folder(init_from)
    tokenizer = Tokenizer.from_pretrained(folder)
    if dist.world_size() > 1:
        raise RecipeError("kexa rl runs in one process (in-process rollouts need the whole model); "
                          "not under torchrun")
    tasks = {s.name: resolve_task(s.task) for s in rr.sources}
    if resume:
        check_resume(run_dir, rr)
    cfg = rr.rl
    rollouts = rollouts or EngineRollouts(compile=cfg.compile)
    batches = RLBatches(rr, tokenizer, tasks, rollouts, seed=rr.recipe.train.seed)
    if rr.judge is not None:
        batches.add_reward("judge", make_judge(rr.judge), rr.judge.weight)
    eval_tasks = {s.task: tasks[s.name] for s in rr.sources} if cfg.eval_n else {}
    reports: dict[str, Any] = {}
    if resume and (run_dir / EVAL_FILE).exists():
        reports = json.loads((run_dir / EVAL_FILE).read_text())

    def evaluate(model) -> dict:
        return evaluate_tasks(model, tokenizer, eval_tasks, cfg.eval_langs, cfg.eval_n, cfg.eval_tier,
                              cfg.eval_max_new_tokens, seed=rr.recipe.train.seed)

    def run_eval(model) -> dict:
        reports["after"] = evaluate(model)
        return flat_metrics(reports["after"])

    def load_model(path: Path) -> KExaone:  # resume: the loop loads the checkpoint's model; rollouts use it
        model = KExaone.from_pretrained(path)
        rollouts.sync(model)
        return model

    model = None
    if not resume:
        refuse_checkpoints(run_dir)
        model = init_model(rr.recipe, folder, tokenizer)
        rollouts.sync(model)
        if eval_tasks and cfg.eval_before:
            reports["before"] = evaluate(model)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RL_RECIPE).write_text(json.dumps(rr.to_dict(), indent=2) + "\n")

    loss = AGAPOLoss(cfg.clip, cfg.level)

    def step_metrics(m: dict) -> dict:
        out = dict(batches.current) | loss.step_metrics()
        update_s = max(m["step_s"] - batches.rollout_s, 1e-9)
        out |= {"rollout_s": batches.rollout_s, "update_tok_per_s": loss.forward_tokens / update_s}
        loss.reset()
        batches.rollout_s = 0.0
        return out

    data = TrainData({}, tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, batches=batches, eval_set=[])
    result = train(rr.recipe, run_dir, data, resume=resume, model=model, quiet=quiet, on_step=on_step, loss=loss,
                   extra_eval=run_eval if eval_tasks else None, desc="rl", load_model=load_model,
                   step_metrics=step_metrics)
    if reports:
        (run_dir / EVAL_FILE).write_text(json.dumps(reports, indent=2, ensure_ascii=False) + "\n", "utf-8")
        (run_dir / REPORT_FILE).write_text(report_markdown(reports, "RL: held-out tasks before / after"), "utf-8")
    return result


def parser() -> argparse.ArgumentParser:
    p = stage_parser("kexa rl", "RL with verifiable rewards (AGAPO) on kexa.tasks.",
                     config="TOML RL recipe (configs/rl_tiny.toml, configs/rl_nano.toml)",
                     init_from="the model folder to train (an SFT model, with its tokenizer)",
                     run_dir="output folder: metrics.jsonl, checkpoints/, model/, rl_eval.json", set_example="rl.clip=4")
    p.add_argument("--judge-url", help="an OpenAI-compatible endpoint for the LLM judge reward ([judge] url)")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..rewards import JudgeError
    args = parser().parse_args(argv)
    overrides = overrides_of(args) + ([f'judge.url="{args.judge_url}"'] if args.judge_url else [])
    return run_command("kexa rl", lambda: load_rl_recipe(args.config, overrides),
                       lambda rr: rl(rr, args.run_dir, args.init_from, resume=args.resume, quiet=args.quiet),
                       errors=(JudgeError, ValueError))
