"""ModelConfig: every shape and hyper-parameter of the K-EXAONE network, in one place.

This dataclass is the single source of truth for shapes. It is validated on construction (bad
values raise `ConfigError` naming the offending fields), has named presets, and maps to and from
the Hugging Face `exaone_moe` config.json, accepting both checkpoint generations:

- historical keys: `is_moe_layer`, `first_last_k_dense_replace`, `rope_theta` + `rope_scaling`,
  `architectures: ["ExaoneMoEForCausalLM"]`;
- current keys: `mlp_layer_types`, `first_k_dense_replace`, `rope_parameters`, `sliding_windows`,
  `mtp_layer_types`, `architectures: ["ExaoneMoeForCausalLM"]`.

Precedence for the dense/sparse pattern (reference §4): mlp_layer_types > is_moe_layer >
first_k_dense_replace > first_last_k_dense_replace (read as a leading count) > 1.

    python -c "from kexa import ModelConfig; print(ModelConfig.preset('tiny'))"
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

ATTENTION_TYPES = ("sliding_attention", "full_attention")
MLP_TYPES = ("dense", "sparse")


class ConfigError(ValueError):
    """A ModelConfig (or a config.json) that cannot describe a valid K-EXAONE network."""


def lllg_layer_types(num_layers: int, pattern: str = "LLLG") -> list[str]:
    """Expand a pattern string ('L' = sliding/local, 'G' = global) over `num_layers` layers."""
    if not pattern or set(pattern) - {"L", "G"}:
        raise ConfigError(f"sliding_window_pattern must be a string of 'L'/'G', got {pattern!r}")
    kind = {"L": "sliding_attention", "G": "full_attention"}
    return [kind[pattern[i % len(pattern)]] for i in range(num_layers)]


@dataclass
class ModelConfig:
    # vocabulary and widths
    vocab_size: int = 153600
    hidden_size: int = 6144
    intermediate_size: int = 18432  # dense SwiGLU (layer 0 and the MTP layer)
    moe_intermediate_size: int = 2048  # one routed expert (and the shared expert, x num_shared_experts)
    num_hidden_layers: int = 48
    # attention
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    head_dim: int = 128  # explicit: n_q*head_dim (8192) != hidden (6144) in the real model
    layer_types: list[str] = field(default_factory=lambda: lllg_layer_types(48))
    sliding_window: int = 128  # keys visible to a query, *including* itself: i - W < j <= i
    rope_theta: float = 1_000_000.0  # RoPE only on sliding layers; global layers are NoPE
    max_position_embeddings: int = 262144
    rms_norm_eps: float = 1e-5
    # MoE
    mlp_layer_types: list[str] = field(default_factory=lambda: ["dense"] + ["sparse"] * 47)
    num_experts: int = 128
    num_experts_per_tok: int = 8
    num_shared_experts: int = 1
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 2.5
    # multi-token prediction: number of MTP blocks (K-EXAONE: 1 dense block); 0 disables it
    num_nextn_predict_layers: int = 1
    mtp_layer_type: str = "full_attention"  # the released config; sliding is marginally better (docs/inference.md)
    # head and embedding
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    hidden_act: str = "silu"
    # special tokens
    bos_token_id: int | None = 1
    eos_token_id: int | None = 53
    pad_token_id: int | None = 0
    # training-objective weights owned by the model's loss() (report §3.1)
    mtp_loss_weight: float = 0.05
    balance_loss_coef: float = 1e-4

    def __post_init__(self) -> None:
        self.layer_types = list(self.layer_types)
        self.mlp_layer_types = list(self.mlp_layer_types)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        errors: list[str] = []

        def positive(*names: str) -> None:
            for n in names:
                v = getattr(self, n)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    errors.append(f"{n} must be a positive integer, got {v!r}")

        positive("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
        if isinstance(self.num_attention_heads, int) and isinstance(self.num_key_value_heads, int) \
                and self.num_key_value_heads >= 1 and self.num_attention_heads % self.num_key_value_heads:
            errors.append(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                          f"num_key_value_heads ({self.num_key_value_heads}) for grouped-query attention")
        if isinstance(self.head_dim, int) and self.head_dim % 2:
            errors.append(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if not isinstance(self.sliding_window, int) or self.sliding_window < 1:
            errors.append(f"sliding_window must be an integer >= 1, got {self.sliding_window!r}")
        if len(self.layer_types) != self.num_hidden_layers:
            errors.append(f"layer_types has {len(self.layer_types)} entries, "
                          f"num_hidden_layers is {self.num_hidden_layers}")
        bad = sorted({t for t in self.layer_types if t not in ATTENTION_TYPES})
        if bad:
            errors.append(f"unknown layer type(s) {bad} in layer_types; expected one of {ATTENTION_TYPES}")
        if len(self.mlp_layer_types) != self.num_hidden_layers:
            errors.append(f"mlp_layer_types has {len(self.mlp_layer_types)} entries, "
                          f"num_hidden_layers is {self.num_hidden_layers}")
        bad = sorted({t for t in self.mlp_layer_types if t not in MLP_TYPES})
        if bad:
            errors.append(f"unknown mlp layer type(s) {bad} in mlp_layer_types; expected one of {MLP_TYPES}")
        if self.mtp_layer_type not in ATTENTION_TYPES:
            errors.append(f"unknown mtp_layer_type {self.mtp_layer_type!r}; expected one of {ATTENTION_TYPES}")
        if "sparse" in self.mlp_layer_types:
            positive("moe_intermediate_size", "num_experts", "num_experts_per_tok", "n_group", "topk_group")
            if not isinstance(self.num_shared_experts, int) or self.num_shared_experts < 0:
                errors.append(f"num_shared_experts must be >= 0, got {self.num_shared_experts!r}")
            if isinstance(self.num_experts_per_tok, int) and isinstance(self.num_experts, int) \
                    and self.num_experts_per_tok > self.num_experts:
                errors.append(f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds "
                              f"num_experts ({self.num_experts})")
            if isinstance(self.n_group, int) and self.n_group >= 1:
                if self.num_experts % self.n_group:
                    errors.append(f"num_experts ({self.num_experts}) must be divisible by n_group ({self.n_group})")
                elif self.n_group > 1 and self.num_experts // self.n_group < 2:
                    errors.append("each expert group needs >= 2 experts (group score = sum of its top-2)")
                if isinstance(self.topk_group, int) and self.topk_group > self.n_group:
                    errors.append(f"topk_group ({self.topk_group}) exceeds n_group ({self.n_group})")
                elif isinstance(self.topk_group, int) and self.n_group > 1 and isinstance(self.num_experts, int) \
                        and self.topk_group * (self.num_experts // self.n_group) < self.num_experts_per_tok:
                    errors.append("topk_group groups hold fewer experts than num_experts_per_tok")
            if not self.routed_scaling_factor > 0:
                errors.append(f"routed_scaling_factor must be > 0, got {self.routed_scaling_factor}")
        if not isinstance(self.num_nextn_predict_layers, int) or self.num_nextn_predict_layers not in (0, 1):
            errors.append(f"num_nextn_predict_layers must be 0 or 1 (K-EXAONE has one MTP block), "
                          f"got {self.num_nextn_predict_layers!r}")
        if self.hidden_act != "silu":
            errors.append(f"hidden_act {self.hidden_act!r} is not supported (K-EXAONE uses 'silu')")
        if not self.rope_theta > 0:
            errors.append(f"rope_theta must be > 0, got {self.rope_theta}")
        if not self.rms_norm_eps > 0:
            errors.append(f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        for n in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(self, n)
            if v is not None and not (isinstance(v, int) and 0 <= v < self.vocab_size):
                errors.append(f"{n} ({v!r}) must be None or an id in [0, vocab_size={self.vocab_size})")
        if self.mtp_loss_weight < 0 or self.balance_loss_coef < 0:
            errors.append("mtp_loss_weight and balance_loss_coef must be >= 0")
        if errors:
            raise ConfigError("invalid ModelConfig:\n  - " + "\n  - ".join(errors))

    # ------------------------------------------------------------------ derived values
    @property
    def has_mtp(self) -> bool:
        return self.num_nextn_predict_layers > 0

    @property
    def num_kv_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == "sliding_attention"

    def is_moe(self, layer: int) -> bool:
        return self.mlp_layer_types[layer] == "sparse"

    @property
    def moe_layers(self) -> list[int]:
        return [i for i in range(self.num_hidden_layers) if self.is_moe(i)]

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        return cls(**PRESETS[name]())

    # ------------------------------------------------------------------ HF config.json
    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "ModelConfig":
        """Read an HF `exaone_moe` config.json dictionary (either generation; extra keys ignored)."""
        if not isinstance(d, dict):
            raise ConfigError(f"expected a config.json dictionary, got {type(d).__name__}")
        model_type = d.get("model_type")
        if model_type not in (None, "exaone_moe"):
            raise ConfigError(f"config.json has model_type {model_type!r}; kexa reads 'exaone_moe' checkpoints")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in d]
        if missing:
            raise ConfigError(f"config.json lacks required key(s) {missing}")
        n = int(d["num_hidden_layers"])
        kw: dict[str, Any] = {}
        for k in ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                  "num_hidden_layers", "num_attention_heads", "max_position_embeddings", "rms_norm_eps",
                  "num_experts", "num_experts_per_tok", "num_shared_experts", "n_group", "topk_group",
                  "norm_topk_prob", "routed_scaling_factor", "tie_word_embeddings", "initializer_range",
                  "hidden_act", "bos_token_id", "pad_token_id", "mtp_loss_weight", "balance_loss_coef"):
            if d.get(k) is not None:
                kw[k] = d[k]
        kw["num_key_value_heads"] = d.get("num_key_value_heads") or d["num_attention_heads"]
        kw["head_dim"] = d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"]
        eos = d.get("eos_token_id")
        kw["eos_token_id"] = eos[0] if isinstance(eos, list) and eos else eos

        # RoPE: transformers-v5 `rope_parameters` or historical `rope_theta` + `rope_scaling`
        rope = d.get("rope_parameters") or {}
        scaling = d.get("rope_scaling")
        for r in (rope, scaling or {}):
            rtype = r.get("rope_type", r.get("type", "default"))
            if rtype not in ("default", None):
                raise ConfigError(f"RoPE scaling type {rtype!r} is not supported (K-EXAONE uses plain RoPE)")
        kw["rope_theta"] = float(rope.get("rope_theta", d.get("rope_theta", 1_000_000.0)))

        # attention pattern: explicit layer_types > sliding_windows > sliding_window_pattern
        window = d.get("sliding_window")
        if d.get("layer_types"):
            kw["layer_types"] = list(d["layer_types"])
        elif d.get("sliding_windows"):
            kw["layer_types"] = ["sliding_attention" if w else "full_attention" for w in d["sliding_windows"]]
            window = window or max(d["sliding_windows"])
        elif window is None:
            kw["layer_types"] = ["full_attention"] * n
        else:
            pattern = d.get("sliding_window_pattern", 4)
            if isinstance(pattern, int):  # HF: layer i is global iff (i + 1) % pattern == 0
                pattern = "L" * (pattern - 1) + "G" if pattern > 0 else "L"
            kw["layer_types"] = lllg_layer_types(n, pattern)
        kw["sliding_window"] = window if window is not None else int(d.get("max_position_embeddings", 262144))

        # dense / sparse pattern, with the precedence documented in the module docstring
        if d.get("mlp_layer_types"):
            kw["mlp_layer_types"] = list(d["mlp_layer_types"])
        elif d.get("is_moe_layer") is not None:
            kw["mlp_layer_types"] = ["sparse" if m else "dense" for m in d["is_moe_layer"]]
        else:
            k = d.get("first_k_dense_replace", d.get("first_last_k_dense_replace", 1))
            kw["mlp_layer_types"] = ["dense" if i < k else "sparse" for i in range(n)]

        # MTP: HF itself ignores it; we read num_nextn_predict_layers and mtp_layer_types
        kw["num_nextn_predict_layers"] = int(d.get("num_nextn_predict_layers", 0) or 0)
        mtp_types = d.get("mtp_layer_types")
        if mtp_types:
            kw["mtp_layer_type"] = mtp_types[0]
        return cls(**kw)

    def to_hf(self) -> dict[str, Any]:
        """The config.json that transformers' ExaoneMoeForCausalLM (and vLLM/TRT-LLM) read."""
        glob = ["G" if t == "full_attention" else "L" for t in self.layer_types]
        d: dict[str, Any] = {
            "architectures": ["ExaoneMoeForCausalLM"],
            "model_type": "exaone_moe",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "initializer_range": self.initializer_range,
            "attention_dropout": 0.0,
            "sliding_window": self.sliding_window,
            "sliding_window_pattern": "".join(glob[:4]) if len(glob) >= 4 else "".join(glob),
            "layer_types": list(self.layer_types),
            "sliding_windows": [self.sliding_window if t == "sliding_attention" else 0 for t in self.layer_types],
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rope_theta": self.rope_theta,
            "mlp_layer_types": list(self.mlp_layer_types),
            "is_moe_layer": [t == "sparse" for t in self.mlp_layer_types],
            "first_k_dense_replace": next((i for i, t in enumerate(self.mlp_layer_types) if t == "sparse"),
                                          self.num_hidden_layers),
            "num_experts": self.num_experts,
            "num_experts_per_tok": self.num_experts_per_tok,
            "num_shared_experts": self.num_shared_experts,
            "n_group": self.n_group,
            "topk_group": self.topk_group,
            "norm_topk_prob": self.norm_topk_prob,
            "routed_scaling_factor": self.routed_scaling_factor,
            "scoring_func": "sigmoid",
            "topk_method": "noaux_tc",
            "num_nextn_predict_layers": self.num_nextn_predict_layers,
            "mtp_layer_types": [self.mtp_layer_type] * self.num_nextn_predict_layers,
            "mtp_sliding_windows": [self.sliding_window if self.mtp_layer_type == "sliding_attention" else 0]
            * self.num_nextn_predict_layers,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "mtp_loss_weight": self.mtp_loss_weight,
            "balance_loss_coef": self.balance_loss_coef,
            "use_cache": True,
        }
        return d

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


# ---------------------------------------------------------------------- presets
def _k_exaone_236b() -> dict[str, Any]:
    return {}  # the dataclass defaults are the real model (reference §5)


def _nano() -> dict[str, Any]:
    # CPU speedrun model (~31M params, ~9M active). Real proportions kept where they matter:
    # two LLLG periods, GQA with n_q*head_dim != hidden, 1/8 of the experts active plus a shared one,
    # a vocabulary small next to depth x width so the head stays a minor part of a decode step.
    return dict(vocab_size=8192, hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
                num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                layer_types=lllg_layer_types(8), sliding_window=64, max_position_embeddings=16384,
                mlp_layer_types=["dense"] + ["sparse"] * 7, num_experts=32, num_experts_per_tok=4,
                rope_theta=10_000.0, eos_token_id=53)


def _tiny() -> dict[str, Any]:
    # for tests: well under a million parameters; window 16 so short sequences cross it
    return dict(vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                layer_types=lllg_layer_types(4), sliding_window=16, max_position_embeddings=8192,
                mlp_layer_types=["dense"] + ["sparse"] * 3, num_experts=8, num_experts_per_tok=2,
                rope_theta=10_000.0, eos_token_id=53)


PRESETS = {"k-exaone-236b": _k_exaone_236b, "nano": _nano, "tiny": _tiny}
