"""The 236B recipe says what the report says (peak lr, 11T tokens, compute, extension lr derived from
the peak), and the SuperBPE transition and pre-tokenizer rule are recipe settings that reach the
tokenizer trainer."""

import random
import types

import pytest

from kexa.config import ModelConfig
from kexa.data.synthetic import SYLLABLES
from kexa.info import parameter_counts
from kexa.speedrun import REPO
from kexa.train.recipe import RecipeError, load_recipe, recipe_from_dict

GPUS = 256  # the layout the recipe's comments size it for (32 nodes x 8)


def test_236b_recipe_matches_the_report():
    recipe = load_recipe(REPO / "configs/k-exaone-236b.toml")
    assert recipe.optim.lr == 3.0e-4
    d = recipe.data
    tokens_per_step = d.seq_len * d.batch_size * d.grad_accum * GPUS
    assert tokens_per_step == 2048 * 8192  # 16.8M
    tokens = recipe.train.steps * tokens_per_step
    assert tokens == pytest.approx(11e12, rel=1e-5)
    active = parameter_counts(ModelConfig.preset(recipe.model["preset"]))["active_params"]
    assert 6 * active * tokens == pytest.approx(1.52e24, rel=0.02)  # the report's training compute
    assert round(recipe.schedule.warmup * recipe.train.steps) == pytest.approx(2000, rel=0.05)
    assert recipe.tokenizer.transition == 0.8 and recipe.tokenizer.rule == "kexaone"


def test_extension_lr_is_derived_from_the_pretraining_peak():
    from kexa.train.extend import load_config
    base = load_recipe(REPO / "configs/k-exaone-236b.toml")
    config = load_config(REPO / "configs/extend_k-exaone-236b.toml")
    end_of_decay = base.optim.lr * base.schedule.min_lr_ratio
    assert [s.lr for s in config.stages] == [pytest.approx(end_of_decay)] * len(config.stages)


@pytest.mark.parametrize("section, message", [
    ({"rule": "gpt4"}, "rule must be one of ['kexaone', 'superbpe']"),
    ({"transition": 1.5}, "transition must be"),
    ({"transition": 100}, "transition must be"),
    ({"transitions": 0.8}, "unknown key"),
])
def test_tokenizer_section_is_validated(section, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        recipe_from_dict({"tokenizer": section})


def test_tokenizer_settings_reach_the_trainer_and_key_the_cache(tmp_path):
    from kexa.train.prepare import prepare_tokenizer
    text = tmp_path / "train.txt"
    rng = random.Random(0)  # pseudo-words: enough distinct pairs that no stage runs out of merges
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(400)]
    text.write_text(" ".join(" ".join(rng.choices(words, k=rng.randint(4, 12))) + "." for _ in range(3000)), "utf-8")
    corpus = types.SimpleNamespace(manifest={"key": "test"}, root=tmp_path, files=lambda split: [text])
    made = {}
    for transition, rule in ((0.5, "superbpe"), (0.9, "superbpe"), (0.9, "kexaone")):
        recipe = recipe_from_dict({"data": {"vocab_size": 700}, "tokenizer": {"transition": transition, "rule": rule}})
        tok = prepare_tokenizer(recipe, corpus, tmp_path / "cache")
        assert tok.meta["rule"] == rule and tok.meta["transition"] == 384 + round(transition * (700 - 384))
        made[(transition, rule)] = tok.hf.to_str()
    assert len(set(made.values())) == 3  # three settings, three cached tokenizers
    assert len(list((tmp_path / "cache").glob("tokenizer-*"))) == 3
