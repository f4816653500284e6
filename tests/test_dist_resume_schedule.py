"""A resume with another train.steps re-derives the WSD decay and curriculum boundaries: it is
refused unless allowed (--allow-schedule-change), and then the old and new boundaries are printed."""

import pytest

from kexa.train.loop import TrainData, schedule_boundaries, train
from kexa.train.pretrain import parser
from kexa.train.recipe import RecipeError, load_recipe

from test_train_loop import BASE, synthetic_data  # the loop tests' learnable token shards


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = synthetic_data(tmp_path_factory.mktemp("syn"))
    return TrainData(d["train"], d["heldout"])


def test_boundaries_follow_wsd_and_the_curriculum():
    r = load_recipe(None, ["schedule.warmup=0.1", "schedule.decay=0.3",
                           "curriculum=[{name='a', fraction=0.6, weights={x=1.0}}, "
                           "{name='b', fraction=0.4, weights={x=1.0}}]"])
    assert schedule_boundaries(r, ["x"], 100) == {"warmup_end": 10, "decay_start": 70, "stage_starts": [60]}
    assert schedule_boundaries(r, ["x"], 7) == {"warmup_end": 1, "decay_start": 5, "stage_starts": [5]}
    flat = load_recipe(None, ["schedule.warmup=0", "schedule.decay=0"])
    assert schedule_boundaries(flat, ["x"], 10) == schedule_boundaries(flat, ["x"], 50)


def test_resume_with_other_steps_is_refused_then_allowed_with_a_log(tmp_path, data, capsys):
    base = BASE + ["schedule.warmup=0.1", "schedule.decay=0.3"]
    train(load_recipe(None, base + ["train.steps=4", "train.save_every=2"]), tmp_path / "r", data, quiet=True)
    with pytest.raises(RecipeError, match=r"train.steps 4 -> 8 moves the schedule: warmup_end 0 -> 1, "
                                          r"decay_start 3 -> 6.*--allow-schedule-change"):
        train(load_recipe(None, base + ["train.steps=8"]), tmp_path / "r", data, resume=True, quiet=True)
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == 4  # nothing was touched
    capsys.readouterr()
    res = train(load_recipe(None, base + ["train.steps=8"]), tmp_path / "r", data, resume=True, quiet=True,
                allow_schedule_change=True)
    assert res.step == 8
    assert "changed schedule (--allow-schedule-change): train.steps 4 -> 8" in capsys.readouterr().err


def test_same_boundaries_resume_without_the_flag(tmp_path, data):
    flat = BASE + ["schedule.warmup=0", "schedule.decay=0"]  # constant lr, one stage: nothing moves
    train(load_recipe(None, flat + ["train.steps=2"]), tmp_path / "r", data, quiet=True)
    assert train(load_recipe(None, flat + ["train.steps=3"]), tmp_path / "r", data, resume=True, quiet=True).step == 3


def test_pretrain_cli_has_the_flag():
    args = parser().parse_args(["--config", "c.toml", "--run-dir", "r", "--resume", "--allow-schedule-change"])
    assert args.allow_schedule_change
    assert not parser().parse_args(["--config", "c", "--run-dir", "r"]).allow_schedule_change
