"""The network's invariants: masks, routing, balance statistics, gradients, MTP, loss, bad input."""

import json

import pytest
import torch
import torch.nn.functional as F

from kexa import ConfigError, KExaone, ModelConfig
from kexa.model.attention import sliding_attention
from kexa.model.hf import CheckpointError
from kexa.info import parameter_counts
from kexa.model.moe import sequence_balance_loss


def tiny(**kw):
    return ModelConfig.preset("tiny").replace(**kw)


def test_presets_and_real_parameter_counts():
    counts = parameter_counts(ModelConfig.preset("k-exaone-236b"))  # meta device: nothing allocated
    # exact figures derived in reference §8 from the official tensor inventory
    assert counts["total_params"] == 236_571_156_352
    assert counts["active_params"] == 22_724_566_912
    assert counts["mtp_params"] == 528_513_280
    assert counts["total_with_mtp"] == 237_099_669_632
    assert counts["total_without_embeddings"] == 234_683_719_552
    nano = parameter_counts(ModelConfig.preset("nano"))
    assert 20e6 < nano["total_params"] < 60e6
    assert parameter_counts(ModelConfig.preset("tiny"))["total_with_mtp"] < 1e6


@pytest.mark.parametrize("changes, message", [
    (dict(num_attention_heads=6, num_key_value_heads=4), "multiple of num_key_value_heads"),
    (dict(num_experts_per_tok=9), "exceeds num_experts"),
    (dict(sliding_window=0), "sliding_window"),
    (dict(layer_types=["sliding_attention"] * 3 + ["chunked_attention"]), "unknown layer type"),
    (dict(layer_types=["full_attention"] * 3), "layer_types has 3 entries"),
    (dict(mlp_layer_types=["dense", "moe", "sparse", "sparse"]), "unknown mlp layer type"),
    (dict(head_dim=15), "even"),
    (dict(n_group=3), "divisible by n_group"),
    (dict(num_nextn_predict_layers=2), "num_nextn_predict_layers"),
    (dict(eos_token_id=10_000), "eos_token_id"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(hidden_size=0), "hidden_size"),
])
def test_bad_configs_are_rejected_with_the_offending_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**changes)


def test_hf_config_round_trip_and_key_generations():
    cfg = ModelConfig.preset("k-exaone-236b")
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg
    assert sum(t == "full_attention" for t in cfg.layer_types) == 12 and cfg.layer_types[47] == "full_attention"
    historical = {  # the released config.json, first generation (reference §4-5)
        "architectures": ["ExaoneMoEForCausalLM"], "model_type": "exaone_moe", "vocab_size": 153600,
        "hidden_size": 6144, "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 48,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128, "sliding_window": 128,
        "sliding_window_pattern": "LLLG", "rope_theta": 1000000, "rope_scaling": None,
        "first_last_k_dense_replace": 1, "is_moe_layer": [False] + [True] * 47, "num_experts": 128,
        "num_experts_per_tok": 8, "num_shared_experts": 1, "n_group": 1, "topk_group": 1, "norm_topk_prob": True,
        "routed_scaling_factor": 2.5, "max_position_embeddings": 262144, "num_nextn_predict_layers": 1,
        "bos_token_id": 1, "eos_token_id": 53, "pad_token_id": 0, "tie_word_embeddings": False, "some_new_key": 7}
    assert ModelConfig.from_hf(historical) == cfg
    with pytest.raises(ConfigError, match="model_type"):
        ModelConfig.from_hf(historical | {"model_type": "llama"})
    with pytest.raises(ConfigError, match="RoPE scaling"):
        ModelConfig.from_hf(historical | {"rope_scaling": {"rope_type": "yarn", "factor": 4}})
    mtp_sliding = ModelConfig.from_hf(historical | {"mtp_layer_types": ["sliding_attention"]})
    assert mtp_sliding.mtp_layer_type == "sliding_attention"


def one_sliding_layer(window=8, **kw):
    torch.manual_seed(0)
    return KExaone(tiny(num_hidden_layers=1, layer_types=["sliding_attention"], mlp_layer_types=["dense"],
                        sliding_window=window, num_nextn_predict_layers=0, **kw)).eval()


@pytest.mark.parametrize("distance, visible", [(7, True), (8, False), (9, False)])
def test_sliding_window_edge(distance, visible):
    """Window W = 8: query i sees keys i-7..i (W keys including itself), not i-8."""
    model = one_sliding_layer(window=8)
    x = torch.randint(0, 512, (1, 30))
    y = x.clone()
    y[0, 5] = (x[0, 5] + 1) % 512
    with torch.no_grad():
        a, b = model(x).logits[0, 5 + distance], model(y).logits[0, 5 + distance]
    assert (not torch.allclose(a, b)) == visible


def reference_attention(q, k, v, window):
    T = q.shape[2]
    i = torch.arange(T)
    mask = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("T, window", [(700, 16), (700, 300), (257, 256), (513, 1)])
def test_block_sparse_sliding_attention_matches_dense_mask(T, window):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 4, T, 8, generator=g), torch.randn(1, 2, T, 8, generator=g), torch.randn(1, 2, T, 8, generator=g)
    assert torch.allclose(sliding_attention(q, k, v, window), reference_attention(q, k, v, window), atol=1e-5)


def test_dropless_when_every_token_picks_the_same_experts():
    torch.manual_seed(0)
    cfg = tiny(num_nextn_predict_layers=0)
    model = KExaone(cfg).eval()
    moe = model.model.layers[1].mlp
    with torch.no_grad():
        moe.gate.e_score_correction_bias.copy_(torch.tensor([100.0, 100.0] + [0.0] * 6))  # all pick 0 and 1
    x = torch.randn(3, 20, cfg.hidden_size)
    with torch.no_grad():
        out, loads, _ = moe(x)
        assert loads.tolist() == [60, 60, 0, 0, 0, 0, 0, 0]  # nothing dropped, no capacity
        # reference: per token, the un-biased, normalised, scaled weights of experts 0 and 1
        flat = x.reshape(-1, cfg.hidden_size)
        s = torch.sigmoid(flat @ moe.gate.weight.T)[:, :2]
        w = s / s.sum(-1, keepdim=True) * cfg.routed_scaling_factor
        ref = moe.shared_experts(flat)
        for e in range(2):
            gate, up = (flat @ moe.experts.gate_up_proj[e].T).chunk(2, -1)
            ref = ref + w[:, e:e + 1] * ((F.silu(gate) * up) @ moe.experts.down_proj[e].T)
    assert torch.allclose(out.reshape(-1, cfg.hidden_size), ref, atol=1e-5)


def test_grouped_matmul_op_matches_a_per_expert_loop_forward_backward_and_compiled():
    """The kexa::grouped_mm custom op (forward and its two-GEMM backward) equals per-expert matmuls,
    an expert with no rows included, eagerly and inside torch.compile (which cannot trace the raw op)."""
    from kexa.model.moe import HAS_GROUPED_MM, grouped_matmul

    if not HAS_GROUPED_MM:
        pytest.skip("this torch has no _grouped_mm")
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([3, 0, 5, 1])  # expert 1 receives nothing
    w = torch.randn(4, 12, 8, generator=g, requires_grad=True)  # (E, out, in); _grouped_mm wants 16-byte strides
    x = torch.randn(int(counts.sum()), 8, generator=g, requires_grad=True)
    grad_out = torch.randn(x.shape[0], 12, generator=g)
    ref = torch.cat([xe @ w[e].T for e, xe in enumerate(x.split(counts.tolist()))])
    ref_gx, ref_gw = torch.autograd.grad(ref, (x, w), grad_out)
    offsets = counts.cumsum(0).to(torch.int32)
    for fn in (grouped_matmul, torch.compile(grouped_matmul, fullgraph=True, backend="aot_eager")):
        out = fn(x, w, counts, offsets)
        gx, gw = torch.autograd.grad(out, (x, w), grad_out)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(gx, ref_gx)
        torch.testing.assert_close(gw, ref_gw)
        assert gw[1].abs().max() == 0


def test_expert_bias_changes_selection_but_not_weights():
    torch.manual_seed(0)
    gate = KExaone(tiny()).model.layers[1].mlp.gate
    x = torch.randn(50, 64)
    scores, idx, w = gate(x)
    with torch.no_grad():
        gate.e_score_correction_bias[idx[0, 0]] -= 10.0  # push token 0's first expert out
    scores2, idx2, w2 = gate(x)
    assert torch.equal(scores, scores2)
    assert idx[0, 0] not in idx2[0]
    assert torch.allclose(w2.sum(-1), torch.full((50,), 2.5))  # normalised then scaled


def test_sequence_balance_loss_is_one_when_perfectly_balanced():
    E, T = 4, 8
    scores = torch.full((T, E), 0.5)  # uniform affinities
    idx = torch.tensor([[0, 1], [2, 3]] * (T // 2))  # every expert gets T*k/E tokens
    assert torch.isclose(sequence_balance_loss(scores, idx, batch=1), torch.tensor(1.0))
    skewed = torch.tensor([[0, 1]] * T)
    peaked = torch.tensor([[0.9, 0.9, 0.1, 0.1]] * T)
    assert sequence_balance_loss(peaked, skewed, batch=1) > 1.5


def test_gradients_reach_every_trainable_parameter_and_not_the_bias():
    torch.manual_seed(0)
    model = KExaone(tiny()).train()
    x = torch.randint(0, 512, (2, 40))
    out = model(x)
    loss, parts = model.loss(out, torch.roll(x, -1, 1))
    assert set(parts) == {"ce", "mtp", "balance"}
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(not b.requires_grad for n, b in model.named_buffers())
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in dict(model.named_buffers())


def test_activation_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    a = KExaone(tiny()).train()
    b = KExaone(tiny()).train()
    b.load_state_dict(a.state_dict())
    b.activation_checkpointing = True
    x = torch.randint(0, 512, (2, 30))
    for m in (a, b):
        m.loss(m(x), torch.roll(x, -1, 1))[0].backward()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), n


def test_mtp_predicts_from_the_next_token_and_loss_handles_ignore_index():
    torch.manual_seed(0)
    model = KExaone(tiny()).eval()
    x = torch.randint(0, 512, (1, 12))
    with torch.no_grad():
        out = model(x)
        assert out.mtp_logits.shape == (1, 11, 512)
        y = x.clone()
        y[0, 6] = (x[0, 6] + 1) % 512  # token 6 feeds MTP position 5 (as the "next token")
        out2 = model(y)
    assert torch.allclose(out.mtp_logits[0, :5], out2.mtp_logits[0, :5], atol=1e-6)  # causal: untouched
    assert not torch.allclose(out.mtp_logits[0, 5], out2.mtp_logits[0, 5])
    labels = torch.full((1, 12), -100)
    total, parts = model.loss(out, labels)
    assert total.item() == 0.0
    labels[0, 3] = 7
    total, parts = model.loss(out, labels)
    expected = F.cross_entropy(out.logits[0, 3:4], torch.tensor([7])) + 0.05 * F.cross_entropy(
        out.mtp_logits[0, 2:3], torch.tensor([7]))
    assert torch.isclose(total, expected)


def test_bad_token_ids_are_rejected():
    model = KExaone(tiny())
    with pytest.raises(ValueError, match=r"\[0, 512\)"):
        model(torch.tensor([[1, 512]]))
    with pytest.raises(ValueError, match="batch, tokens"):
        model(torch.tensor([1, 2]))


def test_tied_embeddings_share_storage_and_round_trip(tmp_path):
    model = KExaone(tiny(tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    again = KExaone.from_pretrained(tmp_path)
    assert again.lm_head.weight is again.model.embed_tokens.weight
    x = torch.randint(0, 512, (1, 10))
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, again(x).logits)


# ------------------------------------------------------------------ bad checkpoints
@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    KExaone(tiny()).save_pretrained(tmp_path)
    return tmp_path


def rewrite(path, edit):
    from safetensors.torch import load_file, save_file
    t = load_file(path / "model.safetensors")
    edit(t)
    save_file(t, path / "model.safetensors")


def test_missing_unexpected_and_misshaped_tensors_are_all_listed(saved):
    def edit(t):
        del t["model.layers.0.self_attn.q_proj.weight"]
        del t["model.layers.2.mlp.experts.5.up_proj.weight"]
        t["model.layers.9.mlp.gate.weight"] = torch.zeros(3)
        t["model.norm.weight"] = torch.zeros(63)
    rewrite(saved, edit)
    with pytest.raises(CheckpointError) as e:
        KExaone.from_pretrained(saved)
    msg = str(e.value)
    for piece in ("missing (2)", "q_proj", "expert 5", "unexpected (1)", "layers.9", "wrong shape (1)", "model.norm.weight"):
        assert piece in msg


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "config.json").unlink(), "config.json is missing"),
    (lambda p: (p / "config.json").write_text("{nope"), "not valid JSON"),
    (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 20), "cannot read"),
    (lambda p: (p / "model.safetensors").unlink(), "no safetensors"),
    (lambda p: (p / "config.json").write_text(json.dumps(
        json.loads((p / "config.json").read_text()) | {"num_experts_per_tok": 99})), "exceeds num_experts"),
    (lambda p: (p / "config.json").write_text(json.dumps(
        json.loads((p / "config.json").read_text()) | {"architectures": ["LlamaForCausalLM"]})), "architectures"),
])
def test_damaged_checkpoints_give_clear_errors(saved, damage, message):
    damage(saved)
    with pytest.raises(CheckpointError, match=message):
        KExaone.from_pretrained(saved)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        KExaone.from_pretrained(tmp_path / "nothing")


def test_cli_info_json(capsys):
    from kexa.cli import main
    assert main(["info", "--preset", "k-exaone-236b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["total_params"] == 236_571_156_352 and out["mtp_params"] == 528_513_280
