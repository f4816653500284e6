"""LoRA adapters for fine-tuning (Hu et al. 2021, arXiv 2106.09685): W x + (alpha / r) B A x.

What a user does with a 236B checkpoint on a few GPUs: the base weights stay frozen and only two
small factors per targeted projection train, A (r, in) and B (out, r). Initialisation is the
paper's: A ~ Kaiming-uniform (nn.Linear's default, as PEFT), B = 0, so applying LoRA does not change
the model's output until the first step. Dropout (optional) acts on the adapter's input only.

Targets are nn.Linear modules named by their last name component: the attention projections
(q_proj, k_proj, v_proj, o_proj) and the SwiGLU projections (gate_proj, up_proj, down_proj) of the
dense FFN layers, the shared experts and the MTP block's layer. Routed experts are 3-D parameter
stacks (`experts.gate_up_proj` (E, 2I, C), `experts.down_proj` (E, C, I)), not modules: they stay
frozen, as do embeddings, lm_head, norms and routers. The router's expert-bias buffer is moved by the
trainer's bias update, not by gradients; a stage may keep that update (it is exported with the model).

Design: the adapters are ordinary parameters of the model (`<module>.lora_A`, `<module>.lora_B`),
and the base weight keeps its name (`<module>.weight`), so the existing machinery needs nothing new:
`build_optimizers` sees only trainable (requires_grad) parameters and puts the factors in AdamW
(optim.split_params: orthogonalising a rank-r factor is not Muon's full-matrix update), optimiser
state and `save_checkpoint` carry them like any parameter, and FSDP2 shards them like any parameter.

Usage contract (the SFT stage):

    from kexa.train.lora import LoRAConfig, apply_lora, merge_lora, load_lora_pretrained
    cfg = LoRAConfig(rank=16, alpha=32, targets=["q_proj", "v_proj"], dropout=0.0)  # recipe [lora]
    model = apply_lora(KExaone.from_pretrained(init_from), cfg)   # fresh run: frozen base + adapters
    optimizers = build_optimizers(model, recipe.optim)            # sees the adapters only
    ...train...; save_checkpoint(...)                             # model/ = base + adapter tensors
    model = load_lora_pretrained(ckpt / "model", cfg)             # --resume: same parameters, same order
    merge_lora(model); model.save_pretrained(run_dir / "model")   # export: a plain HF exaone_moe folder

A LoRA run's checkpoint model/ folders therefore hold kexa-named adapter tensors beside the base
weights: `KExaone.from_pretrained` refuses them (unexpected keys), `load_lora_pretrained` reads them.
`lora_state_dict` / `load_lora_state_dict` move the adapters alone (a small file per run).

    python -c "from kexa import KExaone, ModelConfig; from kexa.train.lora import *; \
m = apply_lora(KExaone(ModelConfig.preset('tiny')), LoRAConfig()); print(trainable_summary(m))"
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..model.transformer import KExaone

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")  # dense FFN, shared experts, MTP layer (SwiGLU)
ALL_TARGETS = ATTENTION_TARGETS + MLP_TARGETS
ADAPTER_NAMES = ("lora_A", "lora_B")


class LoRAError(ValueError):
    """A LoRA configuration or adapter state that cannot be used, with the reason."""


@dataclass
class LoRAConfig:
    rank: int = 16
    alpha: float = 32.0  # the update is scaled by alpha / rank (the paper's scaling)
    targets: list[str] = field(default_factory=lambda: list(ALL_TARGETS))
    dropout: float = 0.0  # on the adapter's input, training mode only

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise LoRAError(f"lora.rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise LoRAError(f"lora.alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise LoRAError(f"lora.dropout must lie in [0, 1), got {self.dropout!r}")
        if isinstance(self.targets, str) or not self.targets:
            raise LoRAError(f"lora.targets must be a non-empty list of module names, got {self.targets!r}")
        unknown = sorted(set(self.targets) - set(ALL_TARGETS))
        if unknown:
            raise LoRAError(f"lora.targets has unknown name(s) {unknown}; valid: {list(ALL_TARGETS)} (routed experts "
                            "are 3-D parameter stacks, not Linear modules, and stay frozen)")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRALinear(nn.Module):
    """y = x W^T (+ b) + scaling * dropout(x) A^T B^T. Holds the base Linear's own weight Parameter
    (same object, same state-dict name `weight`), frozen; not an nn.Linear subclass so that code which
    rewrites every nn.Linear (init_weights, float8 conversion) never mistakes it for a plain layer."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # (out, in)
        self.bias = base.bias
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kw))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kw))  # (out, r): 0, a no-op at start
        if not self.lora_A.is_meta:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's init, as PEFT
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        adapter = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # (..., r) -> (..., out)
        return F.linear(x, self.weight, self.bias) + adapter * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear owning this layer's weight Parameter with W += scaling * B A (in place)."""
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scaling  # (out, in), fp32 then one cast
        self.weight.add_(delta.to(self.weight.dtype))
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = self.weight
        if self.bias is not None:
            linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.lora_A.shape[0]}, "
                f"scaling={self.scaling:g}")


def target_modules(model: nn.Module, targets: list[str]) -> list[str]:
    """Qualified names of the nn.Linear modules whose last name component is in `targets`, in model order."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(model: KExaone, cfg: LoRAConfig) -> KExaone:
    """Freeze every parameter of `model`, then wrap each targeted projection with a LoRA adapter
    (in place; returns the model). The adapters are the only trainable parameters afterwards."""
    if has_lora(model):
        raise LoRAError("the model already carries LoRA adapters (merge_lora it first to stack another round)")
    names = target_modules(model, cfg.targets)
    if not names:
        raise LoRAError(f"lora.targets {cfg.targets} match no Linear module of this model")
    missing = sorted(set(cfg.targets) - {n.rsplit(".", 1)[-1] for n in names})
    if missing:  # e.g. MLP targets on a model whose every FFN is routed and has no shared expert
        raise LoRAError(f"lora.targets {missing} match no Linear module of this model")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        _set_module(model, name, LoRALinear(model.get_submodule(name), cfg.rank, cfg.scaling, cfg.dropout))
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


@torch.no_grad()
def merge_lora(model: KExaone) -> KExaone:
    """Fold every adapter into its base weight and put plain nn.Linear modules back (in place; returns the
    model): the state dict is a plain KExaone's again, so save_pretrained writes an HF folder that
    transformers and KExaone.from_pretrained load. Every parameter is trainable again, as in a fresh model."""
    names = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not names:
        raise LoRAError("merge_lora: the model has no LoRA adapters")
    for name in names:
        _set_module(model, name, model.get_submodule(name).merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors alone, {"<module>.lora_A": (r, in), "<module>.lora_B": (out, r)}, detached."""
    return {k: v.detach() for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in ADAPTER_NAMES}


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors into a model that has the same adapters; every mismatch is listed in one error."""
    own = {k: v for k, v in model.state_dict(keep_vars=True).items() if k.rsplit(".", 1)[-1] in ADAPTER_NAMES}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k}: saved {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise LoRAError("adapter state does not match the model's adapters: "
                        + "; ".join(f"{title} ({len(items)}): {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                                    for title, items in (("missing", missing), ("unexpected", unexpected),
                                                         ("wrong shape", shapes)) if items))
    for k, v in state.items():
        own[k].copy_(v)


def load_lora_pretrained(path: str | Path, cfg: LoRAConfig, dtype: torch.dtype | None = None,
                         device: str | torch.device = "cpu") -> KExaone:
    """Read a LoRA run's checkpoint model folder (base weights + adapter tensors) into an adapted model:
    the same loader as KExaone.from_pretrained (shape checks, streaming), on a model built with adapters,
    so a missing or mis-shaped adapter (a different rank or targets) is a CheckpointError naming it.
    Returns the model in train-ready state: base frozen, adapters trainable (eval mode, as from_pretrained)."""
    from ..model.hf import load_pretrained

    def build(config):
        return apply_lora(KExaone(config), cfg)

    return load_pretrained(build, path, dtype=dtype, device=device)


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """{"trainable": adapter parameters, "total": all parameters, "adapted_modules": LoRA layers}."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return {"trainable": trainable, "total": total,
            "adapted_modules": sum(isinstance(m, LoRALinear) for m in model.modules())}
