"""Acceptance: `kexa pretrain --config configs/tiny.toml` needs no preparation (it builds or reuses
its corpus, tokenizer and shards under cache/) and its loss falls well below the initial value."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_recipe_trains_end_to_end(tmp_path):
    run = tmp_path / "tiny"
    proc = subprocess.run([sys.executable, "-m", "kexa.cli", "pretrain", "--config", "configs/tiny.toml",
                           "--run-dir", str(run), "--steps", "100", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 101))
    first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-10:]) / 10
    assert last < 0.75 * first, (first, last)  # ln(1024) = 6.93 at init
    assert rows[-1]["val_loss"] < 0.8 * first
    assert [r["stage"] for r in rows][::50] == ["foundation", "domain"] and rows[-1]["stage"] == "reasoning"
    last_checkpoint = run / "checkpoints" / "step_00000100" / "model"  # a complete model folder too
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (run / "model" / name).exists(), name
        assert (last_checkpoint / name).exists(), name
    assert (run / "training.png").stat().st_size > 10_000
