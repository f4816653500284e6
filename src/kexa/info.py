"""`kexa info`: parameter counts of a K-EXAONE configuration, computed on the meta device (nothing
allocated). It lives outside `model/` because it is a command; the model package stays pure.

Definitions (they reproduce the model card: 236B total, 23B active, 0.52B MTP; docs/architecture.md):
- total_params: the main network (embedding, 48 layers, final norm, lm_head), MTP excluded;
  a tied embedding/head counts once.
- active_params: parameters touched per token, MTP excluded: total minus the embedding table (a
  lookup, not a matmul) minus the (E - k)/E share of every MoE layer's routed experts.
- every count includes the routers' expert-bias buffers (they are stored in checkpoints).
- mtp_params: the MTP block (fc, its decoder layer, its norms); it shares embedding and head.

    kexa info --preset k-exaone-236b --json
    kexa info --model path/to/model_dir

An unknown preset or a model folder whose config.json is missing or broken: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .config import ModelConfig


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    from .model.transformer import KExaone

    with torch.device("meta"):
        model = KExaone(config)
    seen: set[int] = set()
    total = mtp = embedding = routed_inactive = 0
    # the router's expert-bias buffer is a checkpoint tensor too (47 x 128 in the real model)
    tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers())
    for name, p in tensors:
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        if name.startswith("mtp."):
            mtp += n
            continue
        total += n
        if name == "model.embed_tokens.weight" and not config.tie_word_embeddings:
            embedding += n
        if ".mlp.experts." in name:
            routed_inactive += n * (config.num_experts - config.num_experts_per_tok) // config.num_experts
    active = total - embedding - routed_inactive
    return {
        "total_params": total,
        "active_params": active,
        "mtp_params": mtp,
        "embedding_params": embedding,
        "total_with_mtp": total + mtp,
        "total_without_embeddings": total - embedding - (0 if config.tie_word_embeddings else
                                                          config.vocab_size * config.hidden_size),
        "active_with_embedding_and_mtp": active + embedding + mtp,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kexa info", description="parameter counts on the meta device")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="tiny | nano | k-exaone-236b")
    src.add_argument("--model", type=Path, help="a model folder (its config.json is read; no weights)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.preset:
        config = ModelConfig.preset(args.preset)  # ConfigError (exit 2) names the presets
    else:
        from .model.hf import read_config
        if not (args.model / "config.json").is_file():
            from .cli import UsageError
            raise UsageError(f"--model {args.model}: no config.json (expected a model folder)")
        config, _ = read_config(args.model)  # CheckpointError/ConfigError (exit 2) say what is wrong
    counts = parameter_counts(config)
    if args.json:
        print(json.dumps(counts))
    else:
        for k, v in counts.items():
            print(f"{k:>32}: {v:>18,} ({v / 1e9:.3f} B)")
    return 0
