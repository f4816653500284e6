"""LoRA adapters: a no-op at start, gradients only in adapters, merge equality, HF export, checkpoint resume."""

import os

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.model.hf import CheckpointError
from kexa.train import checkpoint as ckpt
from kexa.train.lora import (ALL_TARGETS, LoRAConfig, LoRAError, LoRALinear, apply_lora, has_lora,
                             load_lora_pretrained, load_lora_state_dict, lora_state_dict, merge_lora,
                             trainable_summary)
from kexa.train.optim import Muon, OptimConfig, build_optimizers

MERGE_TOL = 1e-5  # fp32: W x + s B A x vs (W + s B A) x differ by rounding only


def tiny_model(seed: int = 0) -> KExaone:
    torch.manual_seed(seed)
    return KExaone(ModelConfig.preset("tiny"))


def ids(cfg: ModelConfig, B: int = 2, T: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def perturb_adapters(model: KExaone, seed: int = 2) -> None:
    """B = 0 at init makes every adapter invisible; give B values so merge/export are really tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=gen) * 0.05)


def adapter_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))}


def test_apply_is_a_noop_and_targets_every_projection():
    model = tiny_model()
    x = ids(model.config)
    with torch.no_grad():
        before = model(x).logits
    apply_lora(model, LoRAConfig(rank=4, alpha=8))
    with torch.no_grad():
        after = model(x).logits
    assert torch.equal(before, after)  # B = 0 exactly: the adapter adds exact zeros
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    # 4 attention blocks x 4 + dense layer 0 (3) + 3 shared experts (3 each) + MTP layer (4 attn + 3 dense)
    assert len(wrapped) == 4 * 4 + 3 + 3 * 3 + 7
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == set(ALL_TARGETS)
    assert not any("experts.gate_up_proj" in n or n.endswith("lm_head") for n in wrapped)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            assert m.lora_B.abs().sum() == 0 and m.lora_A.abs().sum() > 0
            assert m.lora_A.shape == (4, m.in_features) and m.lora_B.shape == (m.out_features, 4)
    # base weights keep their names: the state dict is a plain model's plus the adapters
    plain = set(tiny_model().state_dict())
    assert set(model.state_dict()) - plain == adapter_names(model)
    assert plain <= set(model.state_dict())


def test_subset_of_targets():
    model = apply_lora(tiny_model(), LoRAConfig(rank=2, alpha=2, targets=["q_proj", "v_proj"]))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert wrapped == {"q_proj", "v_proj"}
    assert trainable_summary(model)["adapted_modules"] == 2 * 5  # 4 layers + the MTP layer


def test_only_adapters_get_gradients_and_optimizer_sees_only_them():
    model = apply_lora(tiny_model(), LoRAConfig(rank=4, alpha=8))
    perturb_adapters(model)  # with B != 0 the A factors receive gradient too
    model.train()
    x = ids(model.config)
    out = model(x)
    loss, _ = model.loss(out, torch.roll(x, -1, dims=1))
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == adapter_names(model)
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters() if n in with_grad)

    optimizers = build_optimizers(model, OptimConfig(name="muon", lr=1e-2))
    assert not any(isinstance(o, Muon) for o in optimizers)  # adapters go to AdamW, the rest is frozen
    in_opt = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
    assert in_opt == {id(p) for n, p in model.named_parameters() if n in adapter_names(model)}

    base_before = {k: v.clone() for k, v in model.state_dict().items() if k not in adapter_names(model)}
    for o in optimizers:
        o.step()
    for k, v in model.state_dict().items():
        if k in base_before:
            assert torch.equal(v, base_before[k]), f"frozen {k} changed"


def test_merge_equals_adapted_logits_and_is_a_plain_model():
    model = apply_lora(tiny_model(), LoRAConfig(rank=4, alpha=8, dropout=0.1))
    perturb_adapters(model)
    model.eval()  # dropout off: the merged model is the adapted model's eval-mode function
    x = ids(model.config)
    with torch.no_grad():
        adapted = model(x)
        base = tiny_model()(x).logits
    assert (adapted.logits - base).abs().max() > 1e-3  # the adapters really change the output
    merge_lora(model)
    assert not has_lora(model)
    assert set(model.state_dict()) == set(tiny_model().state_dict())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        merged = model(x)
    diff = (merged.logits - adapted.logits).abs().max().item()
    assert diff <= MERGE_TOL, f"merged vs adapted max |logit diff| {diff}"
    assert (merged.mtp_logits - adapted.mtp_logits).abs().max().item() <= MERGE_TOL
    with pytest.raises(LoRAError, match="no LoRA adapters"):
        merge_lora(model)


def test_merged_export_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    model = apply_lora(tiny_model(), LoRAConfig(rank=4, alpha=8))
    perturb_adapters(model)
    model.eval()
    x = ids(model.config)
    with torch.no_grad():
        adapted = model(x).logits
    merge_lora(model).save_pretrained(tmp_path)
    hf = transformers.ExaoneMoeForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        diff = (hf(x).logits - adapted).abs().max().item()
    assert diff <= 1e-4, f"transformers vs adapted kexa max |logit diff| {diff}"


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    """save_checkpoint writes base + adapters; load_lora_pretrained + the optimiser state continue bitwise."""
    cfg = LoRAConfig(rank=4, alpha=8, targets=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
    model = apply_lora(tiny_model(), cfg).train()
    optimizers = build_optimizers(model, OptimConfig(lr=1e-2))
    x = ids(model.config)

    def step(m, opts):
        loss, _ = m.loss(m(x), torch.roll(x, -1, dims=1))
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)

    step(model, optimizers)
    path = ckpt.save_checkpoint(tmp_path, 1, model, optimizers, {}, {"lora": vars(cfg)})
    with pytest.raises(CheckpointError, match="lora_A"):  # a plain load refuses adapter tensors loudly
        KExaone.from_pretrained(path / ckpt.MODEL)
    resumed = load_lora_pretrained(path / ckpt.MODEL, cfg).train()
    assert [n for n, _ in resumed.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert {k: torch.equal(v, model.state_dict()[k]) for k, v in resumed.state_dict().items()} == \
        {k: True for k in model.state_dict()}
    resumed_opts = build_optimizers(resumed, OptimConfig(lr=1e-2))
    ckpt.load_optimizer_states(resumed, resumed_opts, ckpt.load_train_state(path)["optimizers"])
    step(model, optimizers)
    step(resumed, resumed_opts)
    for k, v in model.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    with pytest.raises(CheckpointError, match="lora"):  # a different rank is named, not silently reshaped
        load_lora_pretrained(path / ckpt.MODEL, LoRAConfig(rank=2, alpha=8, targets=cfg.targets))


def test_adapter_state_dict_round_trip_and_mismatch():
    cfg = LoRAConfig(rank=4, alpha=8, targets=["q_proj", "up_proj"])
    a = apply_lora(tiny_model(), cfg)
    perturb_adapters(a)
    state = lora_state_dict(a)
    assert set(state) == adapter_names(a)
    b = apply_lora(tiny_model(), cfg)
    load_lora_state_dict(b, state)
    assert all(torch.equal(state[k], v) for k, v in lora_state_dict(b).items())
    other = apply_lora(tiny_model(), LoRAConfig(rank=4, alpha=8, targets=["q_proj"]))
    with pytest.raises(LoRAError, match="unexpected"):
        load_lora_state_dict(other, state)


@pytest.mark.parametrize("kw,match", [
    ({"rank": 0}, "rank"), ({"alpha": 0}, "alpha"), ({"dropout": 1.0}, "dropout"),
    ({"targets": ["gate_up_proj"]}, "routed experts"), ({"targets": "q_proj"}, "list"), ({"targets": []}, "list"),
])
def test_bad_config_is_one_clear_error(kw, match):
    with pytest.raises(LoRAError, match=match):
        LoRAConfig(**kw)


def test_targets_that_match_nothing_and_double_apply():
    cfg = ModelConfig.preset("tiny").replace(mlp_layer_types=["sparse"] * 4, num_shared_experts=0,
                                             num_nextn_predict_layers=0)
    model = KExaone(cfg)  # every FFN routed, no shared expert: no SwiGLU Linear to adapt
    with pytest.raises(LoRAError, match="gate_proj"):
        apply_lora(model, LoRAConfig(targets=["q_proj", "gate_proj"]))
    model = apply_lora(tiny_model(), LoRAConfig())
    with pytest.raises(LoRAError, match="already"):
        apply_lora(model, LoRAConfig())
