"""GROUPER, K-EXAONE's preference objective (group-wise SimPER), and SimPER itself.

    from kexa.train.preference import group_advantages, grouper_loss, simper_loss
    adv = group_advantages(scores)                      # (P, G) in [-1, 1]; zero rows for zero-variance groups
    loss = grouper_loss(logp, mask, adv.flatten())      # rows = the P·G sampled responses

SimPER (Xiao et al., ICLR 2025, arXiv 2502.00883): no reference model, no hyper-parameters. With the
inverse perplexity e(y) = exp(mean_t log π(y_t | x, y_<t)),
    L_SimPER = -e(y_w) + e(y_l)                                 (mean over pairs)
GROUPER (K-EXAONE report eq. 3-4, our reading; docs/rl.md): G responses with scores s_1..s_G,
    z_i = (s_i - mean(s)) / (std(s) + ε),   A_i = z_i / max_j |z_j|   (or min-max: 2·(z_i - min)/(max - min) - 1)
    L   = -(1/G) Σ_i A_i · e(y_i)
With G = 2 and distinct scores A = (+1, -1), so L = L_SimPER / 2 (tested, values and gradients).
A group whose scores are all equal carries no signal: its advantages are 0 and the stage skips it
(`zero_variance_mask`, shared with the RL objective) and logs the fraction skipped.

The stage, `kexa preference` (below the objective):
    kexa preference --config configs/preference_tiny.toml --init-from RUN/model --run-dir DIR [--steps N] [--resume]
Each optimiser step draws P prompts from the recipe's [[source]]s (built-in or user prompt files per domain,
kexa.data.prompts; kexa.tasks problems for instruction following and tool use), samples G responses per
prompt from the current policy (kexa.train.group_rollout, the Engine), scores them with the recipe's
[[reward]]s (kexa.rewards: template compliance, language consistency by lingua, length bounds, kexa.tasks
constraints, safety refuse / over-refusal, and a rubric judge per domain — an OpenAI-compatible endpoint or a
local model scored from its probabilities of the score lines), drops zero-variance groups (logged) and takes
one GROUPER step on the rest through the shared loop (this module's PreferenceBatches is both the loop's
BatchSource and its StepLoss). Router frozen ([balance] freeze_router, as in RL); no MTP or balance loss.
RUN_DIR gets metrics.jsonl (loss; score mean/spread per domain; each reward part; skipped fraction; response
length; inverse perplexity of the best/worst response; judge malformed/scored counts; held-out rule-reward
means, over-refusal and task accuracy at eval steps), checkpoints/, model/, preference_eval.json (held-out
before/after) and preference_recipe.json. Exit 0; 130/143 after SIGINT/SIGTERM (saved); 1 with one line for
a bad recipe, prompt file, rubric, model folder or judge.

Shapes: P prompts, G responses per prompt, R rows (responses), T tokens; masks select response tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from . import stage
from .recipe import Recipe, RecipeError, _section, recipe_from_dict
from .stage import (LANGS, SourceConfig, check_model_folder, freeze_router, init_model, overrides_of, read_sources,
                    read_stage, refuse_checkpoints, resolve_task, run_command, stage_parser)
from .rl import EPS, zero_variance_mask

__all__ = ["group_advantages", "grouper_advantages", "grouper_loss", "inverse_perplexity", "simper_loss",
           "zero_variance_mask"]


def inverse_perplexity(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(R, T) token log-probs, (R, T) mask -> (R,) exp(mean over the response tokens of log π)."""
    if logp.shape != mask.shape or logp.dim() != 2:
        raise ValueError(f"logp and mask must both be (rows, T); got {tuple(logp.shape)} and {tuple(mask.shape)}")
    mask = mask.bool()
    lengths = mask.sum(dim=1)
    if (lengths == 0).any():
        raise ValueError(f"rows {(lengths == 0).nonzero().flatten().tolist()} have no response tokens")
    total = torch.where(mask, logp.float(), 0.0).sum(dim=1)  # padding may hold -inf
    return (total / lengths).exp()


def simper_loss(logp_chosen: torch.Tensor, mask_chosen: torch.Tensor, logp_rejected: torch.Tensor,
                mask_rejected: torch.Tensor) -> torch.Tensor:
    """SimPER: mean over pairs of -e(chosen) + e(rejected); inputs (pairs, T) (T may differ between the two)."""
    if logp_chosen.shape[0] != logp_rejected.shape[0]:
        raise ValueError(f"chosen and rejected must have the same number of pairs; got {logp_chosen.shape[0]} "
                         f"and {logp_rejected.shape[0]}")
    return (-inverse_perplexity(logp_chosen, mask_chosen) + inverse_perplexity(logp_rejected, mask_rejected)).mean()


def group_advantages(scores: torch.Tensor, scale: str = "max-abs", eps: float = EPS) -> torch.Tensor:
    """(P, G) scores -> (P, G) GROUPER advantages in [-1, 1]: z-score within the group (population std), then
    scale by max |z| ("max-abs", default) or min-max into [-1, 1] ("min-max"); zero-variance rows are 0."""
    if scale not in ("max-abs", "min-max"):
        raise ValueError(f"scale must be 'max-abs' or 'min-max'; got {scale!r}")
    scores = scores.float()
    keep = zero_variance_mask(scores)  # (P,)
    if scores.shape[1] < 2:
        raise ValueError(f"a group needs G >= 2 responses; got G={scores.shape[1]}")
    z = (scores - scores.mean(dim=1, keepdim=True)) / (scores.std(dim=1, unbiased=False, keepdim=True) + eps)
    if scale == "max-abs":
        adv = z / z.abs().amax(dim=1, keepdim=True).clamp(min=eps)
    else:
        lo, hi = z.amin(dim=1, keepdim=True), z.amax(dim=1, keepdim=True)
        adv = 2 * (z - lo) / (hi - lo).clamp(min=eps) - 1
    return torch.where(keep[:, None], adv, 0.0)


grouper_advantages = group_advantages  # the name the brief uses; one function


def grouper_loss(logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """GROUPER: mean over rows of -A_i · e(y_i); logp, mask (R, T), advantages (R,) (no gradient through A).
    One group of G rows gives -(1/G) Σ_i A_i e(y_i); drop skipped (zero-variance) groups' rows before calling."""
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be (rows,) = ({logp.shape[0]},); got {tuple(advantages.shape)}")
    return -(advantages.detach().float() * inverse_perplexity(logp, mask)).mean()


# ============================================================================ the stage: `kexa preference`
PREF_RECIPE = "preference_recipe.json"
EVAL_FILE = "preference_eval.json"
REWARDS = ("template", "format", "language", "length", "task", "safety", "judge")
JUDGE_KINDS = ("none", "local", "endpoint")


@dataclass
class PreferenceConfig:
    prompts_per_step: int = 4  # P: groups per optimiser step
    group_size: int = 4  # G: responses sampled per prompt (EXAONE 4.0: 4-16)
    max_new_tokens: int = 64
    temperature: float = 1.0  # the report's sampling setting (reference §7)
    top_p: float = 1.0
    reasoning_ratio: float = 0.0  # prompts answered in reasoning mode (<think>); the rest non-reasoning
    scale: str = "max-abs"  # GROUPER's scaling of z into [-1, 1]: "max-abs" (default) | "min-max"
    eval_n: int = 2  # held-out task problems per task x language (task sources and eval_tasks)
    eval_langs: list[str] = field(default_factory=lambda: list(LANGS))
    eval_max_new_tokens: int = 64
    eval_tasks: list[str] = field(default_factory=list)  # verifiable accuracy before/after (must not regress)
    eval_before: bool = True

    def __post_init__(self) -> None:
        bad = [k for k in ("prompts_per_step", "max_new_tokens", "eval_max_new_tokens")
               if not isinstance(getattr(self, k), int) or getattr(self, k) < 1]
        bad += ["eval_n"] if not isinstance(self.eval_n, int) or self.eval_n < 0 else []
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive integers (eval_n >= 0)")
        if not isinstance(self.group_size, int) or self.group_size < 2:
            raise ValueError(f"group_size must be an integer >= 2 (a group compares responses), got {self.group_size!r}")
        if not 0.0 <= self.reasoning_ratio <= 1.0:
            raise ValueError(f"reasoning_ratio must lie in [0, 1], got {self.reasoning_ratio!r}")
        if self.scale not in ("max-abs", "min-max"):
            raise ValueError(f"scale must be 'max-abs' or 'min-max', got {self.scale!r}")
        unknown = sorted(set(self.eval_langs) - set(LANGS))
        if unknown:
            raise ValueError(f"eval_langs has unknown language(s) {unknown}; valid: {list(LANGS)}")


@dataclass
class RewardConfig:
    name: str  # one of REWARDS
    weight: float = 1.0
    domains: list[str] = field(default_factory=list)  # apply to these sources' rows only (empty: all)
    min_chars: int = 1  # length
    max_chars: int = 2000  # length

    def __post_init__(self) -> None:
        if self.name not in REWARDS:
            raise ValueError(f"unknown reward {self.name!r}; valid: {list(REWARDS)}")
        if not isinstance(self.weight, (int, float)) or self.weight != self.weight:
            raise ValueError(f"reward {self.name!r}: weight must be a number, got {self.weight!r}")


@dataclass
class JudgeConfig:
    kind: str = "none"  # "local": a kexa model's score-line probabilities | "endpoint": OpenAI-compatible
    model: str = "init"  # local: "init" (a frozen copy of --init-from) or a model folder; endpoint: the model name
    base_url: str = ""  # endpoint: e.g. http://localhost:8000/v1
    api_key_env: str = ""  # endpoint: the environment variable holding the key ("" -> "EMPTY")
    timeout_s: float = 60.0
    retries: int = 2
    parse_retries: int = 1
    concurrency: int = 8
    rubrics: dict[str, str] = field(default_factory=dict)  # domain -> rubric JSON (default: the built-in one)

    def __post_init__(self) -> None:
        if self.kind not in JUDGE_KINDS:
            raise ValueError(f"kind must be one of {list(JUDGE_KINDS)}, got {self.kind!r}")
        if self.kind == "endpoint" and not self.base_url:
            raise ValueError("kind = 'endpoint' needs base_url (an OpenAI-compatible server, e.g. http://host:8000/v1)")


@dataclass
class PreferenceRecipe:
    recipe: Recipe
    preference: PreferenceConfig
    sources: list[SourceConfig]
    rewards: list[RewardConfig]
    judge: JudgeConfig

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "preference": dataclasses.asdict(self.preference),
                "source": [dataclasses.asdict(s) for s in self.sources],
                "reward": [dataclasses.asdict(r) for r in self.rewards], "judge": dataclasses.asdict(self.judge)}


EVAL_KEYS = {"eval_n", "eval_langs", "eval_max_new_tokens", "eval_tasks", "eval_before"}  # may change on resume


def load_preference_recipe(path: str | Path | None, overrides: list[str] | None = None) -> PreferenceRecipe:
    """Read a preference recipe (configs/preference_tiny.toml shows every section) and apply overrides."""
    d = read_stage(path, overrides)
    pref = _section(PreferenceConfig, d.pop("preference", {}), "preference")
    judge = _section(JudgeConfig, d.pop("judge", {}), "judge")
    sources = read_sources(d, "a preference", "file = '<path | builtin:domain>' or task = '<name>'")
    raw_rewards = d.pop("reward", [])
    if not isinstance(raw_rewards, list) or not raw_rewards:
        raise RecipeError(f"a preference recipe needs at least one [[reward]] (name one of {list(REWARDS)})")
    rewards = [_section(RewardConfig, r, f"reward #{i + 1}") for i, r in enumerate(raw_rewards)]
    names = [s.name for s in sources]
    if len({r.name for r in rewards}) != len(rewards):
        raise RecipeError(f"[[reward]] names must be unique; got {[r.name for r in rewards]}")
    for r in rewards:
        if sorted(set(r.domains) - set(names)):
            raise RecipeError(f"[[reward]] {r.name!r}: domains {sorted(set(r.domains) - set(names))} are not "
                              f"[[source]] names {names}")
    if any(r.name == "judge" for r in rewards) != (judge.kind != "none"):
        raise RecipeError("a [[reward]] name = 'judge' needs [judge] kind = 'local' or 'endpoint', and a [judge] "
                          "needs that reward")
    freeze_router(d, "the preference stage keeps the router frozen (as RL does)")
    recipe = recipe_from_dict(d)
    if recipe.data.grad_accum != 1:
        raise RecipeError(f"[data] grad_accum must be 1 for the preference stage (one step = one batch of whole "
                          f"groups; the loop would weight micro-batches by tokens, not rows), got {recipe.data.grad_accum}")
    return PreferenceRecipe(recipe, pref, sources, rewards, judge)


# ---------------------------------------------------------------------------- rewards and judges
def build_judges(pr: PreferenceRecipe, init_from: Path) -> dict[str, Any]:
    """One judge per source domain with that domain's rubric; {} without a judge. JudgeError when an endpoint
    cannot serve (checked once here, before any training)."""
    from ..data.prompts import PromptError, rubric_path
    from ..rewards import JudgeClient, LocalJudge, Rubric
    jc = pr.judge
    if jc.kind == "none":
        return {}
    rubrics = {}
    for s in pr.sources:
        try:
            path = jc.rubrics.get(s.name) or rubric_path(s.name)
        except PromptError as e:
            raise RecipeError(f"[judge] rubrics: {e}") from None
        rubrics[s.name] = Rubric.load(path)
    if jc.kind == "local":
        from ..model.transformer import KExaone
        from ..tokenizer import Tokenizer
        folder = check_model_folder(init_from if jc.model == "init" else jc.model)
        model = KExaone.from_pretrained(folder).eval().requires_grad_(False)  # frozen: the scores stay fixed
        tokenizer = Tokenizer.from_pretrained(folder)
        return {d: LocalJudge(model, tokenizer, r) for d, r in rubrics.items()}
    key = os.environ.get(jc.api_key_env, "EMPTY") if jc.api_key_env else "EMPTY"
    judges = {d: JudgeClient(jc.base_url, jc.model, r, api_key=key, timeout_s=jc.timeout_s, retries=jc.retries,
                             parse_retries=jc.parse_retries) for d, r in rubrics.items()}
    next(iter(judges.values())).check()
    return judges


def build_rewards(pr: PreferenceRecipe, judges: dict[str, Any]) -> tuple[dict, dict[str, float]]:
    """The recipe's reward functions (kexa.rewards, each restricted to its domains) and their weights."""
    from .. import rewards as R
    funcs, weights = {}, {}
    for rc in pr.rewards:
        fn = {"template": R.template_reward, "format": R.format_reward, "language": R.language_reward,
              "task": R.task_reward, "safety": R.safety_reward}.get(rc.name)
        if rc.name == "length":
            try:
                fn = R.length_reward(rc.min_chars, rc.max_chars)
            except ValueError as e:
                raise RecipeError(f"[[reward]] length: {e}") from None
        if rc.name == "judge":
            fn = R.rubric_reward(judges, concurrency=1 if pr.judge.kind == "local" else pr.judge.concurrency)
        funcs[rc.name], weights[rc.name] = R.only_domains(fn, rc.domains), float(rc.weight)
    return funcs, weights


def judge_counts(judges: dict[str, Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for j in judges.values():
        for k, v in j.stats.items():
            totals[k] = totals.get(k, 0) + v
    return totals


def score_rows(funcs: dict, weights: dict[str, float], rows: list, texts: list[str],
               thinking: list[bool]) -> tuple[list[float], dict[str, list]]:
    """Total score per completion (TRL's weighted sum; a row no reward applies to scores 0) and each part."""
    from ..rewards import combine
    columns: dict[str, list] = {k: [r.columns()[k] for r in rows] for k in rows[0].columns()}
    totals, parts = combine(funcs, weights, [r.messages for r in rows], texts, enable_thinking=thinking, **columns)
    return [0.0 if t is None else float(t) for t in totals], parts


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------- prompts, rollouts, the step
class PreferenceBatches:
    """The loop's BatchSource and StepLoss for GROUPER. next_batch(): draw P prompts (step-seeded), sample G
    responses each with the current policy, score them, keep the groups whose scores differ, and return their
    rows (input_ids (R, T), labels (R, T), {"advantages" (R,), "best"/"worst" (R,) bool}). loss(): GROUPER on
    those rows. State is the number of batches drawn: prompts and sampling seeds derive from (seed, index),
    so a resumed run draws and samples exactly what the uninterrupted one did."""

    stage = "preference"

    def __init__(self, pr: PreferenceRecipe, tokenizer, pools: dict[str, Any], funcs: dict, weights: dict,
                 judges: dict[str, Any]):
        self.pr, self.cfg, self.tokenizer, self.pools = pr, pr.preference, tokenizer, pools
        self.funcs, self.weights, self.judges = funcs, weights, judges
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id  # never a target
        self.model = None
        self.draws = 0
        self.pending: dict[str, Any] = {}
        self.last_groups: list[dict] = []  # the last batch's groups: rendered prompt, G response texts, scores

    def attach(self, model):
        """The policy that samples the groups (the loop's model; set before the first batch)."""
        self.model = model
        return model

    def draw(self, index: int) -> list[tuple[Any, bool]]:
        """The P (prompt row, reasoning mode) of batch `index`: source by weight, then a row / a fresh task problem."""
        rng = random.Random(f"{self.pr.recipe.train.seed}:preference:{index}")
        out = []
        for s in rng.choices(self.pr.sources, weights=[s.weight for s in self.pr.sources], k=self.cfg.prompts_per_step):
            pool = self.pools[s.name]
            if s.task:
                from ..data.prompts import task_prompt
                ex = pool.sample(rng, lang=rng.choice(s.langs), tier=rng.choice(s.tiers), split="train")
                row = task_prompt(pool, ex, s.name)
            else:
                row = rng.choice(pool)
            out.append((row, rng.random() < self.cfg.reasoning_ratio))
        return out

    def next_batch(self) -> tuple:
        from ..infer.sampling import SamplingParams
        from ..tokenizer.chat import encode_chat
        from .group_rollout import response_rows, sample_groups
        if self.model is None:
            raise RuntimeError("PreferenceBatches.attach(model) must be called before drawing batches")
        cfg, G = self.cfg, self.cfg.group_size
        drawn = self.draw(self.draws)
        seed = random.Random(f"{self.pr.recipe.train.seed}:rollout:{self.draws}").getrandbits(62)
        self.draws += 1
        prompts = [encode_chat(self.tokenizer, row.messages, tools=row.tools, enable_thinking=mode,
                               add_generation_prompt=True).ids for row, mode in drawn]
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                stop_token_ids=(self.tokenizer.eos_id,), seed=seed)
        groups = sample_groups(self.model, self.tokenizer, prompts, G, params)
        rows = [row for row, _ in drawn for _ in range(G)]
        modes = [mode for _, mode in drawn for _ in range(G)]
        judged = judge_counts(self.judges)
        totals, parts = score_rows(self.funcs, self.weights, rows, groups.texts, modes)
        judged = {k: v - judged.get(k, 0) for k, v in judge_counts(self.judges).items()}  # this batch's judge calls
        scores = torch.tensor(totals).view(-1, G)  # (P, G)
        adv = group_advantages(scores, self.cfg.scale)  # (P, G); zero rows for zero-variance groups
        keep = zero_variance_mask(scores)  # (P,)
        self.pending = self.rollout_metrics(drawn, groups, scores, parts, keep) | {f"judge/{k}": v for k, v in judged.items()}
        self.last_groups = [{"prompt": self.tokenizer.decode(prompts[p]), "texts": groups.texts[p * G:(p + 1) * G],
                             "scores": scores[p].tolist()} for p in range(len(prompts))]  # for inspection, benchmarks
        kept = [p for p in range(len(prompts)) if keep[p]]
        if not kept:  # nothing to learn from: an empty batch (the step takes no gradient and changes nothing)
            empty = torch.zeros(0, 1, dtype=torch.long)
            return empty, empty.clone(), {"advantages": torch.zeros(0)}
        x, labels = response_rows([prompts[p] for p in kept], [groups.responses[p * G + g] for p in kept
                                                               for g in range(G)], G, self.pad_id)
        best = torch.zeros(len(kept), G, dtype=torch.bool)
        worst = torch.zeros(len(kept), G, dtype=torch.bool)
        best[torch.arange(len(kept)), scores[kept].argmax(dim=1)] = True
        worst[torch.arange(len(kept)), scores[kept].argmin(dim=1)] = True
        return x, labels, {"advantages": adv[kept].flatten(), "best": best.flatten(), "worst": worst.flatten()}

    def rollout_metrics(self, drawn, groups, scores, parts, keep) -> dict[str, Any]:
        """This batch's numbers for metrics.jsonl: scores per domain (mean, within-group spread), each reward
        part's mean, skipped (zero-variance) groups, response length, truncation."""
        m: dict[str, Any] = {"groups": len(drawn), "skipped_groups": int((~keep).sum()),
                             "skipped_frac": float((~keep).float().mean()), "score_mean": float(scores.mean()),
                             "response_len": sum(map(len, groups.responses)) / len(groups.responses),
                             "truncated_frac": sum(r == "length" for r in groups.finish_reasons) / len(groups.responses)}
        for domain in sorted({row.domain for row, _ in drawn}):
            idx = [p for p, (row, _) in enumerate(drawn) if row.domain == domain]
            m[f"score_mean/{domain}"] = float(scores[idx].mean())
            m[f"score_spread/{domain}"] = float(scores[idx].std(dim=1, unbiased=False).mean())  # within-group std
        for name, values in parts.items():
            m[f"reward/{name}"] = _mean(values)
        return m

    def loss(self, model, batch: tuple, mtp_weight: float, balance_coef: float):
        """GROUPER on the batch's rows (a StepLoss; no MTP or balance term: the router is frozen)."""
        x, labels, extra = batch
        if x.shape[0] == 0:  # every group was zero-variance: no parameter receives a gradient
            zero = torch.zeros((), device=x.device, requires_grad=True)
            return zero, {"ce": zero.detach()}, SimpleNamespace(expert_loads=None)
        from .rl import token_logprobs
        out = model(x, compute_mtp=False)
        mask = labels != -100  # (R, T) response tokens
        logp = token_logprobs(out.logits, labels.clamp(min=0))  # (R, T)
        loss = grouper_loss(logp, mask, extra["advantages"])
        with torch.no_grad():
            e = inverse_perplexity(logp.detach(), mask)  # (R,)
            self.pending["inv_ppl/best"] = float(e[extra["best"]].mean())
            self.pending["inv_ppl/worst"] = float(e[extra["worst"]].mean())
        return loss, {"ce": loss.detach()}, out

    def step_metrics(self) -> dict[str, Any]:
        m, self.pending = self.pending, {}
        return m

    def state_dict(self) -> dict:
        return {"draws": self.draws}

    def load_state_dict(self, state: dict) -> None:
        self.draws = int(state["draws"])


# ---------------------------------------------------------------------------- held-out evaluation
def heldout_rows(pr: PreferenceRecipe, heldout: dict[str, list], pools: dict[str, Any]) -> list:
    """The held-out prompts: every file row marked heldout, and eval_n held-out problems per language of each
    task source (deterministic in the seed)."""
    from ..data.prompts import task_prompt
    rows = []
    for s in pr.sources:
        if s.file:
            rows += heldout[s.name]
            continue
        for lang in [x for x in pr.preference.eval_langs if x in s.langs]:
            rng = random.Random(f"eval:{pr.recipe.train.seed}:{s.name}:{lang}")
            rows += [task_prompt(pools[s.name], pools[s.name].sample(rng, lang=lang, tier=s.tiers[0], split="heldout"),
                                 s.name) for _ in range(pr.preference.eval_n)]
    return rows


@torch.no_grad()
def evaluate_heldout(model, tokenizer, pr: PreferenceRecipe, rows: list, funcs: dict, weights: dict,
                     tasks: dict[str, Any], before_judge: list | None = None) -> dict[str, Any]:
    """Greedy replies to the held-out prompts scored by the rule rewards (the rule score leaves the judge out),
    refusal on harmful / benign safety prompts, and verifiable task accuracy (kexa.eval.tasks_eval) on
    [preference] eval_tasks. With a judge: each reply's rubric score, and, given the input model's scores of
    the same prompts (`before_judge`), the win rate against it. Restores train mode."""
    from ..eval.tasks_eval import evaluate_tasks, flat_metrics
    from ..infer.engine import Engine
    from ..infer.sampling import SamplingParams
    from ..rewards import final_answer, is_refusal
    from ..tokenizer.chat import encode_chat
    cfg = pr.preference
    mode = cfg.reasoning_ratio > 0.5
    was_training = model.training
    report: dict[str, Any] = {"metrics": {}, "samples": []}
    try:
        if rows:
            engine = Engine(model)
            params = SamplingParams(max_new_tokens=cfg.eval_max_new_tokens, temperature=0.0,
                                    stop_token_ids=(tokenizer.eos_id,))
            prompts = [encode_chat(tokenizer, r.messages, tools=r.tools, enable_thinking=mode,
                                   add_generation_prompt=True).ids for r in rows]
            texts = []
            for i in range(0, len(prompts), 16):
                texts += [tokenizer.decode(ids) for ids in engine.generate(prompts[i:i + 16], params).token_ids]
            rule = {k: f for k, f in funcs.items() if k != "judge"}
            totals, parts = score_rows(rule, {k: weights[k] for k in rule}, rows, texts, [mode] * len(rows))
            m = report["metrics"]
            m["eval/rule_score"] = sum(totals) / len(totals)
            report["rule_scores"] = totals  # per held-out prompt: the before/after gain is paired (rule_gain)
            for domain in sorted({r.domain for r in rows}):
                m[f"eval/rule_score/{domain}"] = _mean(t for t, r in zip(totals, rows) if r.domain == domain)
            for name, values in parts.items():
                m[f"eval/reward/{name}"] = _mean(values)
            for key, want in (("eval/refusal", True), ("eval/over_refusal", False)):
                refused = [is_refusal(final_answer(t)) for t, r in zip(texts, rows) if r.should_refuse is want]
                if refused:
                    m[key] = sum(refused) / len(refused)
            if "judge" in funcs:  # the rubric judge's score per reply: the win rate against the input model
                judged = funcs["judge"]([r.messages for r in rows], texts, domain=[r.domain for r in rows])
                report["judge_scores"] = judged
                m["eval/judge_score"] = _mean(judged)
                if before_judge is not None:
                    m["eval/win_rate_vs_input"] = win_rate(judged, before_judge)
            seen = set()
            for r, t, s in zip(rows, texts, totals):
                if r.domain not in seen:
                    seen.add(r.domain)
                    report["samples"].append({"domain": r.domain, "prompt": r.messages[-1]["content"], "reply": t,
                                              "rule_score": s})
        if tasks and cfg.eval_n:
            acc = evaluate_tasks(model, tokenizer, tasks, cfg.eval_langs, cfg.eval_n, 1, cfg.eval_max_new_tokens,
                                 seed=pr.recipe.train.seed, modes=("reasoning",) if mode else ("non_reasoning",))
            report["metrics"] |= flat_metrics(acc)
    finally:
        model.train(was_training)
    report["metrics"] = {k: v for k, v in report["metrics"].items() if v is not None}
    return report


def rule_gain(before: list[float], after: list[float]) -> dict[str, Any]:
    """Held-out rule score after - before on the same prompts, with its paired 95% bootstrap interval
    (issue target: up, with an interval that excludes 0)."""
    from ..eval.targets import paired_mean_interval
    lo, hi = paired_mean_interval(before, after)
    b, a = sum(before) / len(before), sum(after) / len(after)
    return {"before": b, "after": a, "gain": a - b, "interval": [lo, hi], "n": len(after),
            "improved": sum(y > x for x, y in zip(before, after)), "worse": sum(y < x for x, y in zip(before, after))}


def win_rate(after: list, before: list) -> float | None:
    """Share of prompts whose reply now scores above the input model's under the same rubric (ties count
    half; prompts either judge could not score are left out)."""
    both = [(a, b) for a, b in zip(after, before) if a is not None and b is not None]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in both) / len(both) if both else None


# ---------------------------------------------------------------------------- the stage
def check_resume(run_dir: Path, pr: PreferenceRecipe) -> None:
    """The data- and reward-shaping settings of a resumed run must be those it was started with."""
    stage.check_resume(run_dir, PREF_RECIPE, pr.to_dict(), "preference", EVAL_KEYS)


def build_pools(pr: PreferenceRecipe) -> tuple[dict[str, Any], dict[str, list]]:
    """Per source: its training prompt rows (file) or its kexa.tasks task; and its held-out file rows."""
    from ..data.prompts import load_prompts
    pools, heldout = {}, {}
    for s in pr.sources:
        if s.task:
            pools[s.name] = resolve_task(s.task)
            continue
        rows = load_prompts(s.file, s.name)
        pools[s.name] = [r for r in rows if r.split == "train"]
        heldout[s.name] = [r for r in rows if r.split == "heldout"]
        if not pools[s.name]:
            raise RecipeError(f"[[source]] {s.name!r}: {s.file} has no training prompts (all are split = 'heldout')")
    return pools, heldout


def preference(pr: PreferenceRecipe, run_dir: str | Path, init_from: str | Path, resume: bool = False,
               quiet: bool = False, on_step=None):
    """GROUPER preference learning from the model in `init_from`; see the module docstring."""
    from ..model.transformer import KExaone
    from ..tokenizer import Tokenizer
    from . import dist
    from .loop import TrainData, train
    run_dir = Path(run_dir)
    if dist.world_size() > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RecipeError("kexa preference runs in one process (rollouts go through the in-process Engine)")
    folder = check_model_folder(init_from)
    tokenizer = Tokenizer.from_pretrained(folder)
    if resume:
        check_resume(run_dir, pr)
    else:
        refuse_checkpoints(run_dir)
    pools, heldout = build_pools(pr)
    judges = build_judges(pr, folder)
    funcs, weights = build_rewards(pr, judges)
    batches = PreferenceBatches(pr, tokenizer, pools, funcs, weights, judges)
    eval_rows = heldout_rows(pr, heldout, pools)
    eval_tasks = {name: resolve_task(name) for name in pr.preference.eval_tasks}
    reports: dict[str, Any] = {}
    eval_path = run_dir / EVAL_FILE
    if resume and eval_path.exists():
        reports = json.loads(eval_path.read_text())

    def run_eval(model) -> dict:
        reports["after"] = evaluate_heldout(model, tokenizer, pr, eval_rows, funcs, weights, eval_tasks,
                                            reports.get("before", {}).get("judge_scores"))
        return reports["after"]["metrics"]

    model = None
    if not resume:
        model = batches.attach(init_model(pr.recipe, folder, tokenizer))
        if pr.preference.eval_before:
            reports["before"] = evaluate_heldout(model, tokenizer, pr, eval_rows, funcs, weights, eval_tasks)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / PREF_RECIPE).write_text(json.dumps(pr.to_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    data = TrainData({}, tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, batches=batches, eval_set=[])
    result = train(pr.recipe, run_dir, data, resume=resume, model=model, quiet=quiet, on_step=on_step,
                   loss=batches.loss, extra_eval=run_eval, desc="preference",
                   load_model=lambda path: batches.attach(KExaone.from_pretrained(path)),
                   step_metrics=lambda m: batches.step_metrics())
    reports["judge"] = judge_counts(judges)
    if "rule_scores" in reports.get("before", {}) and "rule_scores" in reports.get("after", {}):
        reports["rule_gain"] = rule_gain(reports["before"]["rule_scores"], reports["after"]["rule_scores"])
    eval_path.write_text(json.dumps(reports, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return result


def parser() -> argparse.ArgumentParser:
    return stage_parser("kexa preference", "GROUPER preference learning with rule and rubric rewards.",
                        config="TOML recipe (configs/preference_tiny.toml, preference_nano.toml)",
                        init_from="the model folder to align (with its tokenizer), e.g. RL's model/",
                        run_dir="output: metrics.jsonl, checkpoints/, model/, preference_eval.json",
                        set_example="preference.group_size=8")


def main(argv: list[str] | None = None) -> int:
    from ..data.prompts import PromptError
    from ..infer.engine import GenerationError
    from ..rewards import JudgeError
    args = parser().parse_args(argv)
    return run_command("kexa preference", lambda: load_preference_recipe(args.config, overrides_of(args)),
                       lambda pr: preference(pr, args.run_dir, args.init_from, resume=args.resume, quiet=args.quiet),
                       errors=(PromptError, JudgeError, GenerationError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
