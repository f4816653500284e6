"""The loop reshape (a stage supplies its batch source and loss) leaves pre-training's numbers alone.

tests/data/pretrain_losses_before_reshape.json was recorded with the loop as it was before the
reshape (commit da9f497: PackedLoader and model.loss hard-wired), on test_train_loop's synthetic
shards; the reshaped loop must reproduce every logged number bitwise (one process, fp32, CPU)."""

import json
from pathlib import Path

import pytest
import torch

from kexa.train.loop import TrainData, model_loss, train
from test_train_loop import recipe, synthetic_data

GOLDEN = json.loads((Path(__file__).parent / "data" / "pretrain_losses_before_reshape.json").read_text())
RUNS = {"plain": ["train.steps=6"],
        "accum": ["train.steps=4", "data.batch_size=2", "data.grad_accum=2", "train.eval_every=2"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = synthetic_data(tmp_path_factory.mktemp("syn"))
    return TrainData(d["train"], d["heldout"])


@pytest.mark.parametrize("name", sorted(RUNS))
def test_pretraining_numbers_are_bitwise_those_before_the_reshape(tmp_path, data, name):
    history = train(recipe(*RUNS[name]), tmp_path / "r", data, quiet=True).history
    got = [{k: m[k] for k in GOLDEN[name][i]} for i, m in enumerate(history)]
    assert got == GOLDEN[name]  # exact float equality, step by step


def test_a_stage_supplies_its_batch_source_and_loss(tmp_path, data):
    """A custom BatchSource + StepLoss drive the same loop: its batches are the ones trained on, its
    loss is the one minimised, its state goes into the checkpoint."""
    class Source:
        stage = "custom"

        def __init__(self):
            self.n = 0

        def next_batch(self):
            g = torch.Generator().manual_seed(self.n)
            self.n += 1
            x = torch.randint(1, 500, (2, 16), generator=g)
            return x, torch.roll(x, -1, 1), {"document_ids": torch.zeros_like(x)}

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    seen = []

    def loss(model, batch, mtp_weight, balance_coef):
        seen.append(set(batch[2]))
        return model_loss(model, batch, mtp_weight, balance_coef)

    res = train(recipe("train.steps=3"), tmp_path / "c", TrainData({}, batches=Source(), eval_set=[]), loss=loss,
                quiet=True)
    assert res.step == 3 and seen == [{"document_ids"}] * 3
    assert [m["stage"] for m in res.history] == ["custom"] * 3
    assert [(m["target_tokens"], m["tokens"]) for m in res.history] == [(32, 32), (32, 64), (32, 96)]
    state = torch.load(next((tmp_path / "c" / "checkpoints").glob("step_*")) / "train_state.pt", weights_only=False)
    assert state["loader"] == {"n": 3}
