"""`kexa export`: a training checkpoint becomes a folder that transformers loads and vLLM/SGLang
would serve — both architecture spellings (engines' first), top-level rope_theta, dtype keys,
generation_config.json with the report's sampling defaults and <|endofturn|> as EOS, per-expert
tensors in the export dtype with an fp32 router, sharding with an index, a warning for the fused
layout, and clean refusals that write nothing."""

import json

import pytest
import torch
from safetensors import safe_open

from kexa import KExaone, ModelConfig
from kexa.train import checkpoint as ckpt
from kexa.train.export import ExportError, end_of_turn_id, export, main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with one training checkpoint of the tiny model (MTP included)."""
    root = tmp_path_factory.mktemp("run")
    model = KExaone(ModelConfig.preset("tiny"))
    model.init_weights(seed=0)
    with torch.no_grad():  # a non-zero expert bias, so its name and dtype are checked for real
        for layer in model.model.layers[1:]:
            layer.mlp.gate.e_score_correction_bias.copy_(torch.linspace(-1e-3, 1e-3, model.config.num_experts))
    opt = torch.optim.AdamW(model.parameters())
    ckpt.save_checkpoint(root, 7, model, [opt], {"note": "test"}, {"train": {"steps": 7}})
    return root, model


def tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out |= {k: h.get_tensor(k) for k in h.keys()}
    return out


def test_export_writes_a_servable_folder(run, tmp_path):
    root, model = run
    out = tmp_path / "hf"
    summary = export(root, out, max_shard_bytes=200_000)  # default bf16; small shards: an index
    assert summary["shards"] > 1 and summary["mtp"] and summary["source"].endswith("step_00000007/model")

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["ExaoneMoEForCausalLM", "ExaoneMoeForCausalLM"]  # engines key on the first
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"] == model.config.rope_theta
    assert cfg["dtype"] == cfg["torch_dtype"] == "bfloat16"
    assert cfg["mtp_layer_types"] == [model.config.mtp_layer_type] and cfg["layer_types"][0] == "sliding_attention"

    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["temperature"] == 1.0 and gen["top_p"] == 0.95 and gen["do_sample"] is True
    assert gen["eos_token_id"] == 53  # <|endofturn|>

    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f.name for f in out.glob("model-*.safetensors")}
    got = tensors(out)
    assert set(index["weight_map"]) == set(got)
    E = model.config.num_experts
    assert "model.layers.1.mlp.experts.0.gate_proj.weight" in got
    assert f"model.layers.1.mlp.experts.{E - 1}.down_proj.weight" in got
    assert not any(k.endswith(("gate_up_proj", "experts.down_proj")) for k in got)
    assert any(k.startswith("mtp.") for k in got)
    bias = got["model.layers.1.mlp.e_score_correction_bias"]
    assert bias.dtype == torch.float32 and torch.equal(bias, model.model.layers[1].mlp.gate.e_score_correction_bias)
    assert got["model.layers.1.mlp.gate.weight"].dtype == torch.float32  # router stays fp32
    assert got["model.embed_tokens.weight"].dtype == torch.bfloat16
    up = model.model.layers[1].mlp.experts.gate_up_proj[3, model.config.moe_intermediate_size:]  # expert 3's up rows
    assert torch.equal(got["model.layers.1.mlp.experts.3.up_proj.weight"], up.bfloat16())

    from transformers import AutoModelForCausalLM, GenerationConfig
    hf, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert hf.dtype == torch.bfloat16 and not info["missing_keys"]
    assert all(k.startswith("mtp.") for k in info["unexpected_keys"])  # transformers has no MTP block
    g = GenerationConfig.from_pretrained(out)
    assert (g.temperature, g.top_p, g.eos_token_id) == (1.0, 0.95, 53)
    back = KExaone.from_pretrained(out)  # and kexa reads its own export back, MTP included
    assert back.config.has_mtp and back.model.embed_tokens.weight.dtype == torch.bfloat16


def test_fp32_export_matches_the_model_in_transformers(run, tmp_path):
    root, model = run
    export(root, tmp_path / "fp32", dtype="float32")
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "fp32").eval()
    x = torch.randint(0, model.config.vocab_size, (2, 24))  # longer than the sliding window (16)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, model.eval()(x).logits, rtol=1e-4, atol=1e-4)


def test_fused_layout_warns_and_round_trips(run, tmp_path):
    root, model = run
    with pytest.warns(UserWarning, match="skip unknown names silently"):
        export(root, tmp_path / "fused", dtype="float32", layout="fused")
    got = tensors(tmp_path / "fused")
    assert "model.layers.1.mlp.experts.gate_up_proj" in got and "model.layers.1.mlp.gate.e_score_correction_bias" in got
    back = KExaone.from_pretrained(tmp_path / "fused")
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


def test_refusals_write_nothing(run, tmp_path, capsys):
    root, _ = run
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export(root, tmp_path / "taken")
    assert [f.name for f in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    with pytest.raises(ExportError, match="not a run folder"):
        export(tmp_path / "taken", tmp_path / "x")

    broken = tmp_path / "broken"  # a model folder whose weights were truncated
    export(root, broken, dtype="float32")
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:1000])
    assert main(["--checkpoint", str(broken), "--out", str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kexa export: error: cannot read") and not (tmp_path / "y").exists()
    assert not list(tmp_path.glob(".y.tmp-*"))
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(root), "--out", str(tmp_path / "z"), "--dtype", "int8"])
    assert e.value.code == 2


def test_cli_prints_the_fused_warning_as_one_line(run, tmp_path, capsys):
    root, _ = run
    assert main(["--checkpoint", str(root), "--out", str(tmp_path / "f"), "--layout", "fused"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("kexa export: warning: exporting the fused expert layout")
    assert "1 shard(s)" in captured.out and "MTP yes" in captured.out


def test_end_of_turn_comes_from_the_tokenizer_when_present(tmp_path):
    from tokenizers import Tokenizer, models
    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "a": 1}, unk_token="[PAD]"))
    tok.add_special_tokens(["<|endofturn|>"])  # id 2 here, not kexa's fixed 53
    tok.save(str(tmp_path / "tokenizer.json"))
    assert end_of_turn_id(tmp_path) == 2
    assert end_of_turn_id(tmp_path / "nowhere") == 53
