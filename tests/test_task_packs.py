"""Task dialogues as pre-training text (kexa.data.task_packs) and the speedrun's target arithmetic
(kexa.eval.targets): packs are exact and whole, train split only, deterministic; a recipe weighting
"tasks" gets the source; intervals, tool-call validity and the RL gain are computed right."""

import json
import math

import numpy as np
import pytest

from kexa.data.shards import TokenShards
from kexa.data.task_packs import write_task_shards
from kexa.eval.targets import newcombe_interval, paired_mean_interval, rl_gain, tool_call_valid
from sft_fixtures import AddTask, make_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def packs_of(tok, shards: TokenShards, seq_len: int) -> list[list[int]]:
    packs = [shards.window(p * seq_len, seq_len).tolist() for p in range(shards.n_tokens // seq_len)]
    assert all(p[-1] == tok.eos_id for p in packs)  # loader windows never end inside a dialogue
    return packs


def contains(pack: list[int], doc: list[int]) -> bool:
    n = len(doc)
    return any(pack[i:i + n] == doc for i in range(len(pack) - n + 1))


def test_packs_hold_whole_train_dialogues_in_both_modes_exactly_and_deterministically(tok, tmp_path):
    seq_len = 96
    meta = write_task_shards(tok, [AddTask()], tmp_path / "a", seq_len, 3000, ["en", "ko"], [1, 2], 0.5, seed=3)
    shards = TokenShards(tmp_path / "a")
    assert shards.n_tokens % seq_len == 0 and shards.n_tokens >= 3000
    assert meta["kind"] == "tasks" and meta["too_long"] == 0
    from kexa.data.task_packs import task_dialogues
    stream = task_dialogues(tok, [AddTask()], ["en", "ko"], [1, 2], 0.5, seed=3)
    drawn = [next(stream) for _ in range(meta["dialogues"])]
    packs = packs_of(tok, shards, seq_len)
    for ids in drawn:  # every drawn dialogue sits whole, followed by EOS, inside one pack
        assert any(contains(p, ids + [tok.eos_id]) for p in packs)
    padding = seq_len * len(packs) - sum(len(d) + 1 for d in drawn)
    assert padding == meta["padding_tokens"] and 0 <= padding < 0.2 * shards.n_tokens
    texts = [tok.decode(d) for d in drawn]
    assert all(t.startswith("<|user|>") for t in texts)
    reasoning = [t for t in texts if " plus " in t]  # the trace "a plus b is c." lives in the think block
    assert 0.3 < len(reasoning) / len(texts) < 0.7  # reasoning_ratio 0.5: both modes
    for t in texts:  # the train split of AddTask only: even a
        a = int(t.split("What is ")[1].split(" +")[0]) if "What is" in t else int(t.split("<|user|>\n")[1].split(" ")[0])
        assert a % 2 == 0
    write_task_shards(tok, [AddTask()], tmp_path / "b", seq_len, 3000, ["en", "ko"], [1, 2], 0.5, seed=3)
    assert np.array_equal(shards.window(0, shards.n_tokens), TokenShards(tmp_path / "b").window(0, shards.n_tokens))


def test_too_long_dialogues_are_skipped_and_none_fitting_is_an_error(tok, tmp_path):
    meta = write_task_shards(tok, [AddTask()], tmp_path / "a", 64, 1000, ["en"], [1, 9], 0.5, seed=0)
    assert meta["too_long"] > 0 and meta["dialogues"] > 0  # tier 9 reasoning traces overflow 64 tokens
    with pytest.raises(ValueError, match="no task dialogue fits a 8-token pack"):
        write_task_shards(tok, [AddTask()], tmp_path / "b", 8, 1000, ["en"], [1], 1.0, seed=0)


def test_a_recipe_weighting_tasks_gets_the_source_and_unknown_families_are_one_error(tok, tmp_path):
    from kexa.train.prepare import TASKS, prepare_tasks, recipe_domains, source_share
    from kexa.train.recipe import RecipeError, recipe_from_dict
    d = {"data": {"seq_len": 128, "batch_size": 4, "tasks": ["arith", "lookup"], "task_tiers": [1]},
         "train": {"steps": 10},
         "curriculum": [{"name": "a", "fraction": 1.0, "weights": {"en": 1.0, TASKS: 3.0}}]}
    recipe = recipe_from_dict(d)
    assert recipe_domains(recipe) == ["en"] and source_share(recipe, TASKS) == 0.75
    src = prepare_tasks(recipe, tok, ["en"], tmp_path / "cache")
    meta = json.loads((src.path / "meta.json").read_text())
    assert meta["tasks"] == ["arith", "lookup"] and meta["langs"] == ["en"] and meta["tiers"] == [1]
    assert src.n_tokens >= 10 * 4 * 128 * 0.75 and prepare_tasks(recipe, tok, ["en"], tmp_path / "cache").path == src.path
    bad = recipe_from_dict(d | {"data": d["data"] | {"tasks": ["arith", "nope"]}})
    with pytest.raises(RecipeError, match="data.tasks: unknown task 'nope'"):
        prepare_tasks(bad, tok, ["en"], tmp_path / "cache")
    with pytest.raises(RecipeError, match=r"data.task_tiers \[7\]: tier\(s\) \[7\] not offered"):
        prepare_tasks(recipe_from_dict(d | {"data": d["data"] | {"task_tiers": [7]}}), tok, ["en"], tmp_path / "cache")
    with pytest.raises(RecipeError, match="task_reasoning_ratio"):
        recipe_from_dict(d | {"data": d["data"] | {"task_reasoning_ratio": 1.5}})


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), method 10 (score, no continuity correction): 56/70 vs 48/80 -> (0.0524, 0.3339)
    lo, hi = newcombe_interval(48, 80, 56, 70)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    lo, hi = newcombe_interval(5, 10, 5, 10)
    assert lo < 0 < hi and math.isclose(-lo, hi)


def test_paired_mean_interval_uses_the_pairing():
    before = [0.0, 1.0, 2.0, 3.0, 4.0] * 8  # a wide spread across prompts ...
    after = [b + 0.5 for b in before]  # ... and the same +0.5 on every one: the paired interval is exact
    assert paired_mean_interval(before, after) == pytest.approx((0.5, 0.5))
    noisy = [b + (0.5 if i % 2 else -0.5) for i, b in enumerate(before)]  # as many up as down
    lo, hi = paired_mean_interval(before, noisy)
    assert lo < 0 < hi
    with pytest.raises(ValueError, match="equal non-empty"):
        paired_mean_interval([1.0], [1.0, 2.0])


def tool(name, **params):
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {k: {"type": v} for k, v in params.items()}, "required": list(params)}}}


CALC, WEATHER = tool("calculator", expression="string"), tool("weather", city="string")


def test_tool_call_validity_needs_a_declared_name_and_json_object_arguments():
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "2 * 3"}}</tool_call><|endofturn|>'
    assert tool_call_valid("I need the calculator.\n</think>\n\n" + call, [CALC])
    assert tool_call_valid(call, [CALC, WEATHER])
    assert not tool_call_valid(call, [WEATHER])  # not a declared tool
    assert not tool_call_valid('<tool_call>{"name": "calculator", "arguments": "2 * 3"}</tool_call>', [CALC])
    assert not tool_call_valid('<tool_call>{"name": "calculator", "arguments": {</tool_call>', [CALC])
    assert not tool_call_valid("6<|endofturn|>", [CALC])  # answered without calling
    # the declared schema decides: a missing required argument is not a valid call
    assert not tool_call_valid('<tool_call>{"name": "calculator", "arguments": {"expr": "2"}}</tool_call>', [CALC])


def test_rl_gain_pools_modes_and_tasks_with_counts():
    def report(acc_r, acc_n):
        return {"n_per_cell": 10, "accuracy": {"reasoning": {"arith": {"en": acc_r, "ko": acc_r}},
                                                "non_reasoning": {"arith": {"en": acc_n, "ko": acc_n}}},
                "accuracy_by_task": {"reasoning": {"arith": acc_r}, "non_reasoning": {"arith": acc_n}}}
    g = rl_gain({"before": report(0.5, 0.3), "after": report(0.8, 0.6)})
    assert g["n"] == 40 and math.isclose(g["before"], 0.4) and math.isclose(g["after"], 0.7)
    assert math.isclose(g["gain"], 0.3) and g["interval"] == list(newcombe_interval(16, 40, 28, 40))
    assert g["tasks"] == ["arith"]
