"""The speedrun end to end at CI size: every stage through the real code path, skipping, redoing."""

import json
import pytest
import torch

from kexa import KExaone
from kexa.report import SECTIONS
from kexa.speedrun import REPO, STAGES, SpeedrunConfig, speedrun
from kexa.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("speedrun")
    cfg = SpeedrunConfig(
        REPO / "configs/tiny.toml", REPO / "configs/extend_tiny.toml",
        recipe_overrides=[f"data.cache_dir={json.dumps(str(root / 'cache'))}", "data.corpus_bytes=40000",
                          "data.vocab_size=600", "train.steps=12", "train.save_every=0", "train.eval_every=6"],
        extend_overrides=["extend.max_rounds=1", "niah.samples=1", "niah.depths=[0.0, 1.0]"],
        extend_stage_steps=[3, 2], decode_new_tokens=8, decode_repeats=1, speculative_k=(1,))
    state = speedrun(root / "run", cfg)
    return root / "run", cfg, state


def test_every_stage_ran_and_left_valid_artefacts(run):
    rundir, _, state = run
    assert [s.name for s in STAGES] == list(state)
    assert all(s["status"] == "done" for s in state.values())
    tok = Tokenizer.from_pretrained(rundir / "model")
    assert tok.decode(tok.encode("hello 안녕")) == "hello 안녕"
    model = KExaone.from_pretrained(rundir / "model")
    transformers = pytest.importorskip("transformers")
    hf = transformers.ExaoneMoeForCausalLM.from_pretrained(rundir / "model").eval()
    x = torch.tensor([tok.encode("The quick brown fox")])
    with torch.no_grad():
        assert (hf(x).logits - model(x).logits).abs().max() < 1e-4
    report = (rundir / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in report
    ev = json.loads((rundir / "eval.json").read_text())
    assert ev["decode"]["speculative"]["1"]["identical_to_greedy"]
    assert ev["params"]["total_params"] > 0 and len(ev["expert_loads"]) == model.config.num_hidden_layers - 1
    assert "NIAH accuracy before extension" in report and "bytes/token gain" in report
    assert (rundir / "loss.png").exists() and (rundir / "balance.png").exists()


def test_rerun_skips_and_corrupted_output_is_redone(run, capsys):
    rundir, cfg, state = run
    capsys.readouterr()
    speedrun(rundir, cfg)
    out = capsys.readouterr().out
    assert all(f"{s.name}: done" in out for s in STAGES)
    before = json.loads((rundir / "stages.json").read_text())["pretrain"]["wall_s"]
    (rundir / "eval.json").write_text("{broken")  # corrupt the evaluation stage's output
    speedrun(rundir, cfg)
    out = capsys.readouterr().out
    assert "pretrain: done" in out and "evaluate: recorded as done but its output is missing or invalid" in out
    after = json.loads((rundir / "stages.json").read_text())
    assert after["pretrain"]["wall_s"] == before
    json.loads((rundir / "eval.json").read_text())
