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

Shapes: P prompts, G responses per prompt, R rows (responses), T tokens; masks select response tokens.
"""

from __future__ import annotations

import torch

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
