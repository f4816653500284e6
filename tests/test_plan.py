"""`kexa plan`: per-GPU memory from the meta-device model. Static state is exact (checked against an
independent count of FSDP2's padded dim-0 shards), a layer's activation estimate is within 15% of the
tensors torch really saves for backward, and the 236B recipe is planned on the meta device."""

import math

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.model.transformer import rope_cos_sin
from kexa.train.optim import split_params
from kexa.train.plan import GiB, layer_activation_bytes, main, plan
from kexa.train.recipe import RecipeError, load_recipe


def test_static_state_of_tiny_matches_an_independent_count():
    recipe = load_recipe("configs/tiny.toml", ["optim.name='muon'"])
    model = KExaone(recipe.model_config(recipe.data.vocab_size))
    params = list(dict.fromkeys(model.parameters()))
    n_params = sum(p.numel() for p in params)
    muon = {id(p) for g in split_params(model)[0] for p in g["params"]}
    one = plan(recipe, 1, 80)
    assert one.total_params == n_params and one.weights == one.grads == 4 * n_params
    assert one.optimizer == sum(4 * p.numel() * (1 if id(p) in muon else 2) for p in params)
    four = plan(recipe, 4, 80)  # FSDP2 pads dim 0 to a multiple of the 4 shards
    assert four.weights == sum(4 * math.ceil(p.shape[0] / 4) * p[0].numel() if p.dim() else 4 for p in params)
    assert one.weights / 4 <= four.weights < one.weights / 4 * 1.05
    adamw = plan(load_recipe("configs/tiny.toml", ["optim.name='adamw'"]), 1, 80)
    assert adamw.optimizer == 2 * adamw.weights


def test_expert_parallelism_splits_the_experts():
    recipe = load_recipe("configs/tiny.toml")
    ep = load_recipe("configs/tiny.toml", ["train.ep_size=2"])
    cfg = recipe.model_config(recipe.data.vocab_size)
    experts = sum(layer.mlp.experts.gate_up_proj.numel() + layer.mlp.experts.down_proj.numel()
                  for layer in KExaone(cfg).model.layers if hasattr(layer.mlp, "experts"))
    # 2 GPUs: FSDP over both (ep 1) or EP 2 x FSDP 1: the same bytes per rank when nothing is padded
    assert plan(recipe, 2, 80).weights == plan(ep, 2, 80).weights
    assert plan(ep, 2, 80).weights - plan(ep, 4, 80).weights >= 4 * experts // 4 - 4 * 64  # experts now over 4


@pytest.mark.parametrize("layer_index", [0, 1])  # nano: layer 0 dense, layer 1 MoE
def test_layer_activation_estimate_matches_saved_tensors(layer_index):
    cfg = ModelConfig.preset("nano")
    torch.manual_seed(0)
    model = KExaone(cfg).train()
    model.init_weights(seed=0)
    layer = model.model.layers[layer_index]
    B, T = 2, 96
    x = torch.randn(B, T, cfg.hidden_size, requires_grad=True)
    pos = torch.arange(T).expand(B, T)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:  # the fp32 parameters are counted as weights, not activations
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16):
        rope = rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta, x.dtype)
        shared = {t.untyped_storage().data_ptr() for t in rope}  # computed once for all layers
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x, rope, None, True)
    measured = sum(v for k, v in saved.items() if k not in shared)
    estimate = layer_activation_bytes(cfg, B * T, cfg.mlp_layer_types[layer_index] == "sparse", 1)
    assert 0.85 < estimate / measured < 1.15, (estimate, measured)


def test_the_236b_recipe_on_the_meta_device():
    recipe = load_recipe("configs/k-exaone-236b.toml")
    p64, p256 = plan(recipe, 64, 80), plan(recipe, 256, 80)
    assert 236e9 < p64.total_params < 238e9  # 236B + the 0.5B MTP block
    assert p64.weights == pytest.approx(4 * p64.total_params / 64, rel=0.02)
    # beyond 16 experts per EP group FSDP2's dim-0 shards of the 16 local experts pad: 256 GPUs save little
    assert p256.weights < p64.weights and p256.weights > 4 * p256.total_params / 256 * 1.5
    assert p256.activation_checkpointing and p256.tokens_per_micro_batch == 8192
    assert p256.activations > p256.activation_parts["logits"] > 20 * GiB  # two 153600-wide heads at 8192 tokens
    assert not p256.fits and p256.total > 80 * GiB
    short = plan(load_recipe("configs/k-exaone-236b.toml", ["data.seq_len=2048"]), 256, 80)
    assert short.fits and short.activations < p256.activations / 3
    assert plan(recipe, 256, 200).fits


def test_cli(capsys):
    assert main(["--config", "configs/k-exaone-236b.toml", "--gpus", "256", "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    assert "237.1B parameters on 256 GPUs (ep_size 8" in out and "does NOT fit" in out
    assert main(["--config", "configs/tiny.toml", "--gpus", "2", "--gpu-mem", "1", "--json"]) == 0
    assert '"fits": true' in capsys.readouterr().out
    assert main(["--config", "configs/k-exaone-236b.toml", "--gpus", "12", "--gpu-mem", "80"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kexa plan: error: --gpus (12) must be a positive multiple of train.ep_size (8)"]
    assert main(["--config", "nowhere.toml", "--gpus", "8", "--gpu-mem", "80"]) == 1
    with pytest.raises(RecipeError, match="--gpu-mem"):
        plan(load_recipe("configs/tiny.toml"), 1, 0)
