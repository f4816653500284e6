"""Warmup-Stable-Decay (WSD) learning-rate schedule (MiniCPM arXiv 2404.06395; Hägele et al. 2405.18392).

    factor(s) = (s + 1) / W                      s < W                 (linear warmup)
              = 1                                W <= s < S - D        (stable)
              = r + (1 - r) * f(x)               x = (s - (S - D)) / D (decay window, x in [0, 1])
    f: linear 1 - x | cosine 0.5 (1 + cos(pi x)) | 1-sqrt 1 - sqrt(x)

with W = round(warmup * S), D = round(decay * S), r = min_lr_ratio and S the total number of
optimiser steps. The factor multiplies every param group's base lr (`initial_lr`), so Muon and
AdamW groups follow the same curve. A plain "warmup + cosine" schedule is WSD with
`decay = 1 - warmup, shape = "cosine"`, so there is no second schedule class.

The schedule is a pure function of the step: its checkpointed state is just the step counter.

    python -c "from kexa.train.schedule import WSD; s = WSD(); print([round(s.factor(i, 100), 3) for i in range(0, 100, 10)])"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


@dataclass
class WSD:
    warmup: float = 0.01  # fraction of total steps
    decay: float = 0.2  # fraction of total steps for the cool-down (Hägele et al.: ~20%, 1-sqrt best)
    shape: str = "1-sqrt"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        errors = []
        if self.shape not in DECAY_SHAPES:
            errors.append(f"schedule.shape must be one of {DECAY_SHAPES}, got {self.shape!r}")
        for name in ("warmup", "decay", "min_lr_ratio"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                errors.append(f"schedule.{name} must lie in [0, 1], got {v!r}")
        if self.warmup + self.decay > 1.0 + 1e-9:
            errors.append(f"schedule.warmup + schedule.decay must be <= 1, got {self.warmup} + {self.decay}")
        if errors:
            raise ValueError("; ".join(errors))

    def factor(self, step: int, total_steps: int) -> float:
        """LR multiplier for 0-based optimiser step `step` of `total_steps`."""
        W = round(self.warmup * total_steps)
        D = round(self.decay * total_steps)
        if step < W:
            return (step + 1) / W
        start = total_steps - D
        if step < start or D == 0:
            return 1.0
        x = min(1.0, (step - start + 1) / D)  # the last step reaches x = 1 (lr = min_lr_ratio * lr)
        if self.shape == "linear":
            f = 1.0 - x
        elif self.shape == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * x))
        else:
            f = 1.0 - math.sqrt(x)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * f


def set_lr(optimizers: list[torch.optim.Optimizer], factor: float) -> float:
    """Set every group's lr to initial_lr * factor; returns the first group's lr (for logging)."""
    first = None
    for opt in optimizers:
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
            first = group["lr"] if first is None else first
    return first or 0.0
