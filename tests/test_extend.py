"""Staged context extension: the gate loop, a real tiny run end to end, positions and memory at 8K.

- The stage loop repeats a stage while its gate fails and advances when it passes; the metrics are
  scripted (a subclass of Extender replaces training and evaluation), so every decision is known.
- A real extension of a tiny model (training through the shared loop, synthetic + long-document +
  rehearsal shards, NIAH through the engine on the held-out shards) writes RUN/model and the log.
- Absolute positions do not matter (RoPE on sliding layers is relative, global layers are NoPE):
  shifting every position id leaves the logits unchanged, which is why extension keeps rope_theta.
- A training-mode forward of the tiny preset over 8,192 tokens (activation checkpointing on) stays
  under 256 MB of peak-RSS growth - the size of a single dense 8K x 8K fp32 attention score matrix,
  so no layer can have materialised one. Measured in a fresh process (ru_maxrss is per process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.data.shards import TokenShards, write_shards
from kexa.train.extend import Extender, config_from_dict, load_config
from kexa.train.loop import TrainData
from kexa.model.hf import CheckpointError
from kexa.train.recipe import RecipeError

ROOT = Path(__file__).resolve().parents[1]
BASE = str(ROOT / "configs" / "tiny.toml")


class NoTokenizer:
    def save_pretrained(self, folder):
        (Path(folder) / "tokenizer.json").write_text("{}")


class Scripted(Extender):
    """Training does nothing; NIAH and short-context loss come from scripts (one value per call)."""

    def __init__(self, config, run_dir, niah, loss):
        super().__init__(config, run_dir, quiet=True)
        self._data = TrainData(train={}, tokenizer=NoTokenizer())
        self.niah_script, self.loss_script, self.trained = iter(niah), iter(loss), []

    def train_round(self, model, i, rnd):
        self.trained.append((self.config.stages[i].name, rnd))
        return model, {"train_loss": 0.0, "steps": 1, "tok_per_s": 0.0}

    def niah(self, model, lengths, tag):
        acc = next(self.niah_script)
        return {"accuracy": {str(n): acc for n in lengths}}

    def short_loss(self, model):
        return next(self.loss_script)


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("start")
    torch.manual_seed(0)
    KExaone(ModelConfig.preset("tiny")).save_pretrained(d)
    return d


def gate_config(start_model, max_rounds=3, on_fail="advance"):
    return config_from_dict({
        "extend": {"base": BASE, "init_from": str(start_model), "threshold": 0.95, "loss_tolerance": 0.02,
                   "max_rounds": max_rounds, "on_fail": on_fail},
        "niah": {"baseline": False},
        "stage": [{"name": "A", "seq_len": 512, "steps": 1}, {"name": "B", "seq_len": 2048, "steps": 1}]})


def test_stage_repeats_until_the_gate_passes_then_advances(start_model, tmp_path, capsys):
    # base loss 2.0; A: NIAH 0.5 (repeat), 0.97 with +1% loss (advance);
    # B: NIAH 1.0 but +10% loss (repeat), then +1.5% (advance)
    ext = Scripted(gate_config(start_model), tmp_path, niah=[0.5, 0.97, 1.0, 1.0], loss=[2.0, 2.0, 2.02, 2.2, 2.03])
    result = ext.run()
    assert ext.trained == [("A", 1), ("A", 2), ("B", 1), ("B", 2)]
    rounds = [r for r in result.log if r["event"] == "round"]
    assert [r["decision"] for r in rounds] == ["repeat", "advance", "repeat", "advance"]
    assert "NIAH min 0.500 < 0.95" in rounds[0]["reason"] and "regression +10.00% > 2%" in rounds[2]["reason"]
    assert rounds[2]["niah_min"] == 1.0 and rounds[3]["regression"] == pytest.approx(0.015)
    assert result.passed == {"A": True, "B": True} and result.rounds == {"A": 2, "B": 2}
    logged = [json.loads(x) for x in (tmp_path / "extend_log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in logged] == ["baseline", "round", "round", "round", "round", "done"]
    assert logged == result.log
    assert (tmp_path / "model" / "config.json").exists()
    console = capsys.readouterr().out
    assert console.count("[extend] round") == 4 and "-> repeat" in console
    with pytest.raises(CheckpointError, match="new --run-dir"):
        Scripted(gate_config(start_model), tmp_path, niah=[], loss=[]).run()


def test_round_limit_stops_or_advances_unmet(start_model, tmp_path):
    stop = Scripted(gate_config(start_model, max_rounds=2, on_fail="stop"), tmp_path / "s", niah=[0.1, 0.2],
                    loss=[2.0, 2.0, 2.0]).run()
    assert [r["decision"] for r in stop.log if r["event"] == "round"] == ["repeat", "stop"]
    assert stop.rounds == {"A": 2} and stop.passed == {"A": False} and stop.log[-1]["decision"] == "stopped"
    go = Scripted(gate_config(start_model, max_rounds=1), tmp_path / "g", niah=[0.1, 0.99],
                  loss=[2.0, 2.0, 2.0]).run()
    assert [r["decision"] for r in go.log if r["event"] == "round"] == ["advance_unmet", "advance"]
    assert go.passed == {"A": False, "B": True}


def test_bad_configs_name_the_problem(tmp_path):
    with pytest.raises(RecipeError, match="must increase"):
        config_from_dict({"stage": [{"name": "a", "seq_len": 512, "steps": 1}, {"name": "b", "seq_len": 256, "steps": 1}]})
    with pytest.raises(RecipeError, match="unknown key"):
        config_from_dict({"stage": [{"name": "a", "seq_len": 512, "steps": 1, "stepz": 2}]})
    with pytest.raises(RecipeError, match="weights"):
        config_from_dict({"stage": [{"name": "a", "seq_len": 512, "steps": 1, "weights": {"web": 1.0}}]})
    for name in ("extend_tiny", "extend_nano", "extend_k-exaone-236b"):  # the shipped configs load
        assert load_config(ROOT / "configs" / f"{name}.toml").stages


def test_real_tiny_extension_end_to_end(tmp_path):
    from kexa.tokenizer import train_bpe
    from test_niah import FACTS, HELDOUT
    (tmp_path / "c.txt").write_text((HELDOUT + FACTS + " 0123456789 ") * 20, "utf-8")
    tok = train_bpe([str(tmp_path / "c.txt")], vocab_size=600)
    sentences = [s.strip() + "." for s in (HELDOUT * 4).split(".") if s.strip()]
    docs = [tok.encode(" ".join(sentences[i:i + n])) for i, n in zip(range(0, 60, 6), [1, 6, 2, 5, 3, 6, 4, 2, 6, 1])]
    for split in ("train", "heldout"):
        write_shards(docs * 3, tmp_path / split, tok.vocab_size, tok.eos_id)
    torch.manual_seed(0)
    KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size)).save_pretrained(tmp_path / "start")
    cfg = config_from_dict({
        "extend": {"base": BASE, "init_from": str(tmp_path / "start"), "max_rounds": 1,
                   "base_overrides": ["data.seq_len=32", "data.batch_size=2", "data.eval_batches=1", "train.plot=false"]},
        "niah": {"depths": [0.5], "samples": 1, "baseline": False},
        "stage": [{"name": "4x", "seq_len": 128, "steps": 2, "batch_size": 2, "niah_lengths": [128]}]})
    ext = Extender(cfg, tmp_path / "run", quiet=True)
    ext._data = TrainData(train={"en": TokenShards(tmp_path / "train")}, heldout={"en": TokenShards(tmp_path / "heldout")},
                          tokenizer=tok, vocab_size=tok.vocab_size)
    result = ext.run()
    run = tmp_path / "run"
    assert [r["event"] for r in result.log] == ["baseline", "round", "done"]
    rnd = result.log[1]
    assert rnd["steps"] == 2 and set(rnd["niah"]) == {"128"} and rnd["short_loss"] > 0
    metrics = [json.loads(x) for x in (run / "stage0-4x" / "round1" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and metrics[0]["tokens"] == 2 * 128
    for kind in ("synthetic", "longdoc"):
        meta = json.loads((run / "data" / "0-4x" / kind / "meta.json").read_text())
        assert meta["seq_len"] == 128 and meta["n_tokens"] % 128 == 0
    assert (run / "model" / "tokenizer.json").exists() and (run / "niah" / "stage0-4x-round1.png").exists()
    before, after = KExaone.from_pretrained(tmp_path / "start"), KExaone.from_pretrained(run / "model")
    assert not torch.equal(before.model.embed_tokens.weight, after.model.embed_tokens.weight)


def test_absolute_position_does_not_matter():
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny")).eval()
    x = torch.randint(0, 512, (1, 80))
    pos = torch.arange(80)[None]
    with torch.no_grad():
        a = model(x, position_ids=pos, compute_mtp=False).logits
        b = model(x, position_ids=pos + 100_000, compute_mtp=False).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


MEMORY_PROBE = """
import resource, torch
torch.set_num_threads(1)
from kexa import KExaone, ModelConfig
torch.manual_seed(0)
model = KExaone(ModelConfig.preset("tiny"))
model.activation_checkpointing = True
model.train()
x = torch.randint(0, 512, (1, 8193))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = model(x[:, :-1])
loss, _ = model.loss(out, x[:, 1:])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, float(loss))
"""
BOUND_MB = 256  # one dense 8192 x 8192 fp32 score matrix; tiny has 4 heads x 4 layers of them


def test_8k_training_forward_fits_the_memory_bound():
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    grew_mb, loss = map(float, proc.stdout.split())
    assert grew_mb < BOUND_MB and loss == loss, f"peak RSS grew {grew_mb:.0f} MB over 8K tokens (bound {BOUND_MB} MB)"
