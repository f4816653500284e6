"""AGAPO, K-EXAONE's RL objective: leave-one-out group advantages, global normalisation, zero-variance
filtering, and an off-policy policy gradient with truncated importance sampling (no KL, no reference model).

    from kexa.train.rl import zero_variance_mask, group_advantages, agapo_loss, agapo_stats, token_logprobs
    keep = zero_variance_mask(rewards)                  # (P,) prompts whose G rewards differ
    adv = group_advantages(rewards)                     # (P, G); rows of dropped prompts are 0
    logp = token_logprobs(model(ids).logits[:, :-1], ids[:, 1:])   # (rows, T-1) training forward
    loss = agapo_loss(logp, rollout_logp, adv.flatten()[rows], mask, clip=2.0)   # rows: the kept responses

The formulas (report §3.4; EXAONE 4.0 §2.4.2 for AGAPO; docs/rl.md):
    A_loo,i  = r_i - 1/(G-1) · Σ_{j≠i} r_j                                   per prompt, G responses
    A_i      = (A_loo,i - mean) / (std + ε)    mean, std over the responses of the kept prompts only
    L        = - Σ_{i,t} sg(min(π_θ(o_it) / μ(o_it), C)) · A_i · log π_θ(o_it) / N_tokens
μ is the rollout (behaviour) policy whose log-probs were recorded at generation time; the weight is
truncated at C and carries no gradient (truncated IS, Yao et al. 2025), so d L / d log π_θ(o_it) =
-min(ρ_it, C)·A_i / N_tokens. Zero-variance prompts (all G rewards equal) carry no signal and are
dropped before the update (unlike EXAONE 4.0, which kept all-wrong groups): their advantages are 0 and
they take no part in the global mean/std.

The stage that trains with it (`kexa rl`: rollouts through kexa's engine, the recipe, metrics, resume) is
kexa.train.rl_stage; `main` below is its command.

Shapes: P prompts, G responses per prompt, R = rows (responses in the update batch), T = response tokens.
Choices the report leaves open, settled here and in docs/rl.md: the population std (unbiased=False;
`unbiased=True` for the sample std), ε = 1e-6, and the token-level weighting by default
(`level="sequence"` uses one truncated weight min(Π_t ρ_it, C) per response, as verl's sequence IS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def zero_variance_mask(rewards: torch.Tensor) -> torch.Tensor:
    """(P, G) rewards -> (P,) bool, True where the prompt is kept (its G rewards are not all equal)."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (prompts, G); got shape {tuple(rewards.shape)}")
    return (rewards != rewards[:, :1]).any(dim=1)


def leave_one_out(rewards: torch.Tensor) -> torch.Tensor:
    """(P, G) -> (P, G): r_i minus the mean of the other G-1 rewards of its prompt."""
    G = rewards.shape[1]
    if G < 2:
        raise ValueError(f"leave-one-out advantages need G >= 2 responses per prompt; got G={G}")
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)  # (P, G)
    return rewards - others_mean


def group_advantages(rewards: torch.Tensor, eps: float = EPS, unbiased: bool = False) -> torch.Tensor:
    """(P, G) rewards -> (P, G) AGAPO advantages: leave-one-out, then z-scored over all responses of the kept
    prompts; rows of zero-variance prompts are 0. Computed in fp32 whatever the input dtype."""
    rewards = rewards.float()
    keep = zero_variance_mask(rewards)  # (P,)
    loo = leave_one_out(rewards)  # (P, G)
    adv = torch.zeros_like(loo)
    if keep.any():
        kept = loo[keep]  # (P_kept, G)
        adv[keep] = (kept - kept.mean()) / (kept.std(unbiased=unbiased) + eps)  # mean is 0: LOO sums to 0 per prompt
    return adv


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits and (B, T) target ids -> (B, T) fp32 log π(target): the log-probs AGAPO's `logp` (the
    training forward) and the rollout's `rollout_logp` must both be, for the same tokens. For a sequence
    `ids`, `token_logprobs(model(ids).logits[:, :-1], ids[:, 1:])`. Computed by cross_entropy (fused
    log-softmax + gather) in fp32 whatever the logits' dtype."""
    if logits.shape[:-1] != targets.shape or logits.dim() != 3:
        raise ValueError(f"logits (B, T, V) and targets (B, T) do not match: {tuple(logits.shape)}, "
                         f"{tuple(targets.shape)}")
    B, T, V = logits.shape
    return -F.cross_entropy(logits.reshape(B * T, V).float(), targets.reshape(B * T), reduction="none").view(B, T)


def _check_rows(logp, rollout_logp, advantages, mask) -> None:
    if logp.shape != rollout_logp.shape or logp.shape != mask.shape or logp.dim() != 2:
        raise ValueError(f"logp, rollout_logp and mask must all be (rows, T); got {tuple(logp.shape)}, "
                         f"{tuple(rollout_logp.shape)}, {tuple(mask.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be (rows,) = ({logp.shape[0]},); got {tuple(advantages.shape)}")


def importance_weights(logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, clip: float,
                       level: str = "token") -> torch.Tensor:
    """sg(min(ρ, C)) with ρ = π_θ/μ: (rows, T) per token, or (rows, 1) per sequence (ρ = Π_t ρ_t); detached."""
    if clip <= 0:
        raise ValueError(f"the truncation bound C must be > 0; got clip={clip}")
    mask = mask.bool()
    log_ratio = torch.where(mask, logp.detach().float() - rollout_logp.float(), 0.0)  # (rows, T)
    if level == "token":
        return log_ratio.exp().clamp(max=clip)
    if level == "sequence":
        return log_ratio.sum(dim=1, keepdim=True).exp().clamp(max=clip)  # (rows, 1); exp overflow -> inf -> C
    raise ValueError(f"level must be 'token' or 'sequence'; got {level!r}")


def agapo_loss(logp: torch.Tensor, rollout_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
               clip: float = 2.0, level: str = "token") -> torch.Tensor:
    """The AGAPO loss (module docstring): scalar. logp (rows, T) = log π_θ of the sampled tokens (with grad),
    rollout_logp (rows, T) = log μ of the same tokens, advantages (rows,), mask (rows, T) = response tokens.
    Normalised by the number of response tokens in the batch (token-level, as DAPO and nanochat)."""
    _check_rows(logp, rollout_logp, advantages, mask)
    weights = importance_weights(logp, rollout_logp, mask, clip, level)  # (rows, T) or (rows, 1)
    per_token = weights * advantages.detach().float()[:, None] * logp.float()  # (rows, T)
    per_token = torch.where(mask.bool(), per_token, 0.0)  # padding may hold -inf log-probs
    return -per_token.sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def agapo_stats(logp: torch.Tensor, rollout_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float = 2.0) -> dict[str, float]:
    """What the RL stage logs per step about the update: mean token IS weight (after truncation), fraction of
    response tokens truncated at C, mean |A| over rows, and the mean log-ratio log π_θ - log μ (rollout gap)."""
    _check_rows(logp, rollout_logp, advantages, mask)
    mask = mask.bool()
    n = mask.sum().clamp(min=1)
    log_ratio = torch.where(mask, logp.float() - rollout_logp.float(), 0.0)
    weights = log_ratio.exp().clamp(max=clip)
    return {"is_weight_mean": float((weights * mask).sum() / n),
            "is_truncated_frac": float(((log_ratio.exp() > clip) & mask).sum() / n),
            "adv_abs_mean": float(advantages.float().abs().mean()) if advantages.numel() else 0.0,
            "log_ratio_mean": float(log_ratio.sum() / n)}


def main(argv: list[str] | None = None) -> int:
    """`kexa rl`: the stage lives in kexa.train.rl_stage (rollouts, recipe, metrics, resume); the objective here."""
    from .rl_stage import main as stage_main
    return stage_main(argv)
