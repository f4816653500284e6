"""`kexa plan`: the memory of one GPU under a recipe's FSDP x EP layout, from the meta-device model —
so a user sees whether the recipe is sized before renting a cluster.

    kexa plan --config configs/k-exaone-236b.toml --gpus 256 --gpu-mem 80
    kexa plan --config configs/k-exaone-236b.toml --gpus 512 --gpu-mem 80 --set data.batch_size=2 --json
    kexa plan --config configs/tiny.toml --gpus 2 --gpu-mem 1

The layout is the one `loop.train` builds (parallel.py): every rank is a data rank; the routed experts
are split over `train.ep_size` ranks (E / ep each) and FSDP2-sharded over the other gpus / ep ranks
holding the same experts; everything else is FSDP2-sharded over all gpus. FSDP2 shards dim 0 and pads
it to a multiple of the shard count, so a rank holds ceil(dim0 / n) rows of each tensor (counted here
exactly, tensor by tensor). Buffers (the routers' expert bias) are replicated.

Per rank, in bytes (all exact from the parameter shapes except activations, an estimate):
    weights      fp32 master weights (train.dtype = bf16 is autocast: weights stay fp32)
    grads        fp32, sharded like the weights
    optimizer    fp32: Muon keeps one momentum buffer, AdamW two moments (optim.split_params decides)
    gathers      transient, in fp32 (the loop calls parallelize() without a mixed-precision policy):
                 the root unit (embeddings, head, final norm) stays gathered from forward to backward
                 and holds its full gradient (2 x root); other units (a decoder layer, one layer's
                 local experts, the MTP block) are unsharded one at a time with the next prefetched
                 and one full gradient before the reduce-scatter (3 x the largest); plus Muon's
                 Newton-Schulz gather of the largest FSDP-sharded hidden matrix (expert stacks hold
                 whole matrices per rank: no gather)
    activations  one micro-batch of N = data.batch_size x data.seq_len tokens with per-layer
                 activation checkpointing: every layer's fp32 input (N C 4 per layer), one layer
                 recomputed in bf16 autocast (its saved tensors, below), the MTP layer (not
                 checkpointed), and the two heads' logits (bf16 output and the fp32 log-softmax
                 cross-entropy saves: N V 6 each) plus one fp32 and one bf16 logits gradient (N V 6)
                 Without checkpointing every layer keeps its saved tensors.
    reserve      10% of the GPU for the CUDA context, NCCL buffers and allocator fragmentation
A layer's saved tensors are estimated per token from the attention and MoE/SwiGLU shapes plus the
bf16 copies autocast makes of its matrices (`layer_activation_bytes`), calibrated on CPU against
torch's saved-tensor hooks (tests/test_plan.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

import torch

from ..config import ModelConfig
from ..model.moe import Experts
from ..model.transformer import KExaone
from .optim import split_params
from .recipe import Recipe, RecipeError, load_recipe

GiB = 2**30
FP32, BF16 = 4, 2
RESERVE = 0.10  # of the GPU: CUDA context, NCCL buffers, allocator fragmentation


@dataclass
class Plan:
    gpus: int
    ep_size: int
    gpu_mem_gib: float
    tokens_per_micro_batch: int
    activation_checkpointing: bool
    total_params: int
    weights: int  # bytes per rank
    grads: int
    optimizer: int
    buffers: int
    gathers: int
    activations: int
    activation_parts: dict[str, int]  # layers (checkpointed inputs + one recompute), mtp_layer, logits
    reserve: int
    total: int
    fits: bool

    def table(self) -> str:
        rows = [("weights (fp32, sharded)", self.weights), ("gradients (fp32, sharded)", self.grads),
                ("optimizer states (fp32)", self.optimizer), ("buffers (replicated)", self.buffers),
                ("FSDP / Muon gathers (transient)", self.gathers),
                (f"activations ({self.tokens_per_micro_batch} tokens"
                 f"{', checkpointed' if self.activation_checkpointing else ''})", self.activations),
                (f"reserve ({RESERVE:.0%} of the GPU)", self.reserve)]
        size = f"{self.total_params / 1e9:.1f}B" if self.total_params >= 1e9 else f"{self.total_params / 1e6:.2f}M"
        lines = [f"{size} parameters on {self.gpus} GPUs (ep_size {self.ep_size}, "
                 f"FSDP2 over {self.gpus} / {self.gpus // self.ep_size} ranks), per GPU:"]
        lines += [f"  {name:<44} {b / GiB:9.2f} GiB" for name, b in rows]
        parts = ", ".join(f"{k} {v / GiB:.2f}" for k, v in self.activation_parts.items())
        lines.insert(len(lines) - 1, f"    of which (GiB): {parts}")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"  {'total':<44} {self.total / GiB:9.2f} GiB  of {self.gpu_mem_gib:g} GiB: {verdict}")
        return "\n".join(lines)


def sharded_bytes(shape: torch.Size, shards: int, nbytes: int) -> int:
    """Bytes one rank holds of a tensor FSDP2-sharded on dim 0 over `shards` ranks (dim 0 padded)."""
    if not shape:
        return nbytes
    rest = math.prod(shape[1:])
    return math.ceil(shape[0] / shards) * rest * nbytes


def layer_activation_bytes(cfg: ModelConfig, n: int, sparse: bool, ep: int) -> int:
    """Bytes one decoder layer saves for backward over n tokens under bf16 autocast: the per-token
    tensors below plus the bf16 copies autocast makes of the layer's matrices (the local experts'
    included; the fp32 router is not copied). Calibrated against torch's saved-tensor hooks on CPU
    (tests/test_plan.py: within 15% for dense and MoE layers); on GPU flash attention saves the
    same q/k/v/output/logsumexp, and expert parallelism adds its all-to-all buffers (4 k C)."""
    C, D, Hq, Hkv = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    # attention block: fp32 residual input and RMSNorm internals (16C), bf16 normed inputs (4C),
    # q and k before/after QK-norm and RoPE, v, attention output, logsumexp and norm statistics
    per_token = 20 * C + 10 * Hq * D + 12 * Hkv * D + 8 * Hq + 4 * Hkv + 16
    if sparse:
        k, I, E = cfg.num_experts_per_tok, cfg.moe_intermediate_size, cfg.num_experts
        Is = cfg.moe_intermediate_size * cfg.num_shared_experts
        # router input fp32 + scores, dispatched rows and outputs (bf16) with the fp32 combine (10kC),
        # SwiGLU gate/up/activation per assignment (6kI), routing indices/weights, shared expert, norms
        per_token += 8 * C + 4 * E + 10 * k * C + 6 * k * I + 32 * k + 6 * Is + (4 * k * C if ep > 1 else 0)
    else:
        per_token += 8 * C + 6 * cfg.intermediate_size
    weight_copies = 2 * layer_matrix_params(cfg, sparse, ep)
    return n * per_token + weight_copies


def layer_matrix_params(cfg: ModelConfig, sparse: bool, ep: int) -> int:
    """Elements of one layer's matrices that run in bf16 under autocast (local experts only)."""
    C, D, Hq, Hkv = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    attention = C * (Hq + 2 * Hkv) * D + Hq * D * C
    if not sparse:
        return attention + 3 * C * cfg.intermediate_size
    I, Is = cfg.moe_intermediate_size, cfg.moe_intermediate_size * cfg.num_shared_experts
    return attention + cfg.num_experts // ep * 3 * C * I + 3 * C * Is


def plan(recipe: Recipe, gpus: int, gpu_mem_gib: float) -> Plan:
    """The per-GPU memory of `recipe` on `gpus` GPUs of `gpu_mem_gib` GiB each (see the module docstring)."""
    tc, dc = recipe.train, recipe.data
    ep = tc.ep_size
    if gpus < 1 or gpus % ep:
        raise RecipeError(f"--gpus ({gpus}) must be a positive multiple of train.ep_size ({ep})")
    if not gpu_mem_gib > 0:
        raise RecipeError(f"--gpu-mem must be > 0 GiB, got {gpu_mem_gib}")
    cfg = recipe.model_config(dc.vocab_size if dc.tokenizer == "train" else None)
    with torch.device("meta"):
        model = KExaone(cfg)
    expert_params = {id(p) for m in model.modules() if isinstance(m, Experts) for p in m.parameters()}

    # ---- static state, tensor by tensor, as FSDP2 x EP shards it
    shard_of: dict[int, int] = {}  # id(param) -> bytes of one fp32 shard on a rank
    total_params = 0
    for p in dict.fromkeys(model.parameters()):  # tied weights once
        total_params += p.numel()
        if id(p) in expert_params and ep > 1:  # (E, ., .) -> (E / ep, ., .), then FSDP over gpus / ep
            local = torch.Size([p.shape[0] // ep, *p.shape[1:]])
            shard_of[id(p)] = sharded_bytes(local, gpus // ep, FP32)
        else:
            shard_of[id(p)] = sharded_bytes(p.shape, gpus, FP32)
    weights = sum(shard_of.values())
    muon, decay, no_decay = split_params(model)
    muon_params = [p for g in muon for p in g["params"]] if recipe.optim.name == "muon" else []
    muon_ids = {id(p) for p in muon_params}
    optimizer = sum(shard_of[i] * (1 if i in muon_ids else 2) for i in shard_of)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())

    # ---- transient gathers. The root unit (embeddings, head, final norm) stays gathered from forward
    # to backward and holds its full gradient before the reduce-scatter: 2 x root. Other units
    # (a decoder layer, one layer's local experts, the MTP block): current + prefetched params and
    # one full gradient: 3 x the largest.
    units = []
    for layer in list(model.model.layers) + (list(model.mtp.layers) if model.mtp is not None else []):
        dense = sum(p.numel() for p in layer.parameters() if id(p) not in expert_params or ep == 1)
        units.append(dense * FP32)
        if ep > 1:  # one layer's local experts are their own unit (over gpus / ep ranks)
            units.append(sum(p.numel() for p in layer.parameters() if id(p) in expert_params) // ep * FP32)
    if model.mtp is not None:
        units.append(sum(p.numel() for n, p in model.mtp.named_parameters() if not n.startswith("layers.")) * FP32)
    root = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("model.layers.", "mtp."))) * FP32
    muon_gather = max((p.numel() * (FP32 + 3 * BF16) for p in muon_params
                       if id(p) not in expert_params or ep == 1), default=0)
    gathers = 2 * root + 3 * max(units) + muon_gather

    # ---- activations of one micro-batch
    n = dc.batch_size * dc.seq_len
    per_layer = [layer_activation_bytes(cfg, n, t == "sparse", ep) for t in cfg.mlp_layer_types]
    if tc.activation_checkpointing:  # every layer's fp32 input, then one layer recomputed at a time
        body = cfg.num_hidden_layers * n * cfg.hidden_size * FP32 + max(per_layer)
    else:
        body = sum(per_layer)
    heads = 1 + (1 if cfg.has_mtp else 0)
    mtp = layer_activation_bytes(cfg, n, False, ep) if cfg.has_mtp else 0  # the MTP layer is dense (mtp.py)
    # per head: the bf16 logits (held by the step's output until backward) and the fp32 log-softmax
    # cross-entropy saves; in backward one fp32 + one bf16 logits gradient at a time
    logits = heads * n * cfg.vocab_size * (BF16 + FP32) + n * cfg.vocab_size * (FP32 + BF16)
    activations = body + mtp + logits
    activation_parts = {"layers": body, "mtp_layer": mtp, "logits": logits}

    reserve = int(RESERVE * gpu_mem_gib * GiB)
    total = weights * 2 + optimizer + buffers + gathers + activations + reserve  # weights + grads alike
    return Plan(gpus=gpus, ep_size=ep, gpu_mem_gib=gpu_mem_gib, tokens_per_micro_batch=n,
                activation_checkpointing=tc.activation_checkpointing, total_params=total_params,
                weights=weights, grads=weights, optimizer=optimizer, buffers=buffers, gathers=gathers,
                activations=activations, activation_parts=activation_parts, reserve=reserve, total=total,
                fits=total <= gpu_mem_gib * GiB)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kexa plan", description="Per-GPU memory of a recipe under its FSDP x EP "
                                "layout, from the meta-device model (nothing is allocated).")
    p.add_argument("--config", required=True, help="TOML recipe (configs/k-exaone-236b.toml, ...)")
    p.add_argument("--gpus", type=int, required=True, help="number of GPUs (a multiple of train.ep_size)")
    p.add_argument("--gpu-mem", type=float, required=True, help="memory of one GPU in GiB (80 for an H100)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set data.batch_size=2 (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object (bytes)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = plan(load_recipe(args.config, args.overrides), args.gpus, args.gpu_mem)
    except RecipeError as e:
        print(f"kexa plan: error: {e}", file=sys.stderr)
        return 2 if str(e).startswith("--") else 1
    print(json.dumps(asdict(result)) if args.json else result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
