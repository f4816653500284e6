"""Logit parity with transformers' ExaoneMoeForCausalLM, both checkpoint directions and layouts."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from kexa import KExaone, ModelConfig
from kexa.config import lllg_layer_types

transformers = pytest.importorskip("transformers")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from transformers import ExaoneMoeConfig, ExaoneMoeForCausalLM  # noqa: E402

TOL = 1e-4


def tiny(**kw) -> ModelConfig:
    return ModelConfig.preset("tiny").replace(num_nextn_predict_layers=0, **kw)


CASES = {
    "window<seq": tiny(),
    "two-lllg-periods": tiny(num_hidden_layers=8, layer_types=lllg_layer_types(8),
                             mlp_layer_types=["dense"] + ["sparse"] * 7, sliding_window=8),
    "mqa-top1": tiny(num_key_value_heads=1, num_experts_per_tok=1),
    "mha-two-dense": tiny(num_key_value_heads=4, mlp_layer_types=["dense", "dense", "sparse", "sparse"]),
    "groups-shared2": tiny(n_group=2, topk_group=1, num_shared_experts=2, num_experts_per_tok=3),
}


def hf_model(cfg: ModelConfig, seed: int = 0) -> ExaoneMoeForCausalLM:
    torch.manual_seed(seed)
    model = ExaoneMoeForCausalLM(ExaoneMoeConfig(**cfg.to_hf())).eval()
    with torch.no_grad():  # HF inits the router at 0 in some versions; make routing non-trivial
        for layer in model.model.layers:
            if hasattr(layer.mlp, "gate"):
                layer.mlp.gate.weight.normal_(0, 0.5)
                layer.mlp.gate.e_score_correction_bias.normal_(0, 0.05)
    return model


def ids(cfg, T=40, B=2, seed=1):
    return torch.randint(0, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", list(CASES))
def test_hf_save_loads_in_kexa_with_same_logits(case, tmp_path):
    cfg = CASES[case]
    hf = hf_model(cfg)
    hf.save_pretrained(tmp_path)
    model = KExaone.from_pretrained(tmp_path)
    x = ids(cfg)
    with torch.no_grad():
        diff = (hf(x).logits - model(x).logits).abs().max().item()
    assert diff <= TOL, f"{case}: max |logit diff| {diff}"


@pytest.mark.parametrize("per_expert", [True, False], ids=["per-expert", "fused"])
@pytest.mark.parametrize("case", ["window<seq", "two-lllg-periods", "mqa-top1"])
def test_kexa_save_loads_in_hf_with_same_logits(case, per_expert, tmp_path):
    cfg = CASES[case].replace(num_nextn_predict_layers=1)  # HF ignores mtp.* on load
    torch.manual_seed(3)
    model = KExaone(cfg).eval()
    model.save_pretrained(tmp_path, per_expert=per_expert, max_shard_bytes=100_000)
    assert (tmp_path / "model.safetensors.index.json").exists()  # sharded
    hf = ExaoneMoeForCausalLM.from_pretrained(tmp_path).eval()
    x = ids(cfg, T=50)
    with torch.no_grad():
        diff = (hf(x).logits - model(x).logits).abs().max().item()
    assert diff <= TOL
    again = KExaone.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(x).mtp_logits, model(x).mtp_logits)  # MTP weights round-trip


def test_official_style_checkpoint_historical_keys(tmp_path):
    """Per-expert tensors + `mlp.e_score_correction_bias` + historical config keys, as released."""
    cfg = CASES["two-lllg-periods"]
    hf = hf_model(cfg)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    assert any(".mlp.experts.0.gate_proj.weight" in k for k in tensors)  # transformers writes per-expert
    assert any(k.endswith(".mlp.e_score_correction_bias") for k in tensors)
    raw = json.loads((tmp_path / "config.json").read_text())
    for k in ("mlp_layer_types", "first_k_dense_replace", "rope_parameters", "layer_types", "sliding_windows"):
        raw.pop(k, None)
    raw.update(architectures=["ExaoneMoEForCausalLM"], is_moe_layer=[False] + [True] * 7,
               first_last_k_dense_replace=1, rope_theta=10000.0, rope_scaling=None, sliding_window_pattern="LLLG")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    model = KExaone.from_pretrained(tmp_path)
    assert model.config.layer_types == cfg.layer_types and model.config.mlp_layer_types == cfg.mlp_layer_types
    x = ids(cfg)
    with torch.no_grad():
        assert (hf(x).logits - model(x).logits).abs().max().item() <= TOL


def test_fused_checkpoint_from_split_official_one(tmp_path):
    """Fuse the per-expert tensors into transformers-5 3-D stacks by hand: loads to the same logits."""
    cfg = CASES["window<seq"]
    hf = hf_model(cfg)
    hf.save_pretrained(tmp_path / "official")
    tensors = load_file(tmp_path / "official" / "model.safetensors")
    fused = {}
    for layer in range(1, cfg.num_hidden_layers):
        p = f"model.layers.{layer}.mlp"
        E = cfg.num_experts
        fused[f"{p}.experts.gate_up_proj"] = torch.stack(
            [torch.cat([tensors.pop(f"{p}.experts.{e}.gate_proj.weight"), tensors.pop(f"{p}.experts.{e}.up_proj.weight")])
             for e in range(E)])
        fused[f"{p}.experts.down_proj"] = torch.stack([tensors.pop(f"{p}.experts.{e}.down_proj.weight") for e in range(E)])
        fused[f"{p}.gate.e_score_correction_bias"] = tensors.pop(f"{p}.e_score_correction_bias")
    out = tmp_path / "fused"
    out.mkdir()
    save_file(tensors | fused, out / "model.safetensors")
    (out / "config.json").write_text((tmp_path / "official" / "config.json").read_text())
    model = KExaone.from_pretrained(out)
    x = ids(cfg)
    with torch.no_grad():
        assert (hf(x).logits - model(x).logits).abs().max().item() <= TOL


def test_bf16_load_keeps_router_in_fp32(tmp_path):
    cfg = CASES["window<seq"]
    KExaone(cfg).save_pretrained(tmp_path)
    model = KExaone.from_pretrained(tmp_path, dtype=torch.bfloat16)
    gate = model.model.layers[1].mlp.gate
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert gate.weight.dtype == torch.float32 and gate.e_score_correction_bias.dtype == torch.float32
    hf = ExaoneMoeForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    x = ids(cfg)
    with torch.no_grad():
        a, b = hf(x).logits.float(), model(x).logits.float()
    # same routing (router fp32 on both sides); remaining differences are bf16 rounding order
    assert (a - b).abs().max().item() < 0.05 * a.abs().max().item()


def test_checkpoint_without_mtp_loads_with_warning(tmp_path):
    cfg = CASES["window<seq"].replace(num_nextn_predict_layers=1)
    hf_model(cfg).save_pretrained(tmp_path)  # transformers drops mtp.*; config keeps the count
    with pytest.warns(UserWarning, match="no mtp"):
        model = KExaone.from_pretrained(tmp_path)
    assert model.mtp is None and model.config.num_nextn_predict_layers == 0
