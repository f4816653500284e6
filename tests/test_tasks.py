"""kexa.tasks: every verifier accepts its own reference and rejects a corrupted one (every task, tier,
language, both modes); splits are disjoint; sampling is deterministic; the SFT conversation renders
the reference reply through the chat template."""

import json
import random
import threading

import pytest

import kexa.tasks as T
from kexa.tasks.base import split_of
from kexa.tokenizer.chat import render, render_with_spans

CASES = [(name, tier, lang) for name in T.names() for tier in T.get(name).tiers for lang in T.LANGS]
SEEDS_PER_CASE = 3


def _draws(name, tier, lang, split="train", n=SEEDS_PER_CASE):
    task = T.get(name)
    if name == "lookup" and tier >= 3:  # long contexts: one draw is enough
        n = 1
    rng = random.Random(f"{name}/{tier}/{lang}/{split}")
    return task, [task.sample(rng, lang=lang, tier=tier, split=split) for _ in range(n)]


def test_registry_interface():
    assert {"arith", "lookup", "sorting"} <= set(T.names())
    for name in T.names():
        task = T.get(name)
        assert 1 in task.tiers and set(T.LANGS) <= set(task.langs)
    with pytest.raises(KeyError, match="unknown task 'nope'; known tasks: "):
        T.get("nope")
    with pytest.raises(ValueError, match="tier must be one of"):
        T.get("arith").sample(random.Random(0), tier=99)
    with pytest.raises(ValueError, match="lang must be one of"):
        T.get("arith").sample(random.Random(0), lang="fr")


@pytest.mark.parametrize("name,tier,lang", CASES)
def test_reference_scores_one_and_corruption_zero(name, tier, lang):
    for split in ("train", "heldout"):
        task, exs = _draws(name, tier, lang, split, n=SEEDS_PER_CASE if split == "train" else 1)
        rng = random.Random(0)
        for ex in exs:
            assert isinstance(ex, T.Example) and isinstance(ex.answer, str) and ex.reasoning.strip()
            assert ex.meta["task"] == name and ex.meta["lang"] == lang and ex.meta["split"] == split
            assert ex.messages and ex.messages[-1]["role"] in ("user", "tool")
            assert task.reward(ex, ex.reference(reasoning=True)) == 1.0, (ex.messages, ex.answer)
            assert task.reward(ex, ex.reference(reasoning=False)) == 1.0
            assert task.reward(ex, ex.answer) == 1.0  # no think block at all: the whole reply is the answer
            wrong = task.corrupt(ex, rng)
            assert wrong != ex.answer
            assert task.reward(ex, f"<think>\n{ex.reasoning}\n</think>\n\n{wrong}") == 0.0, (ex.answer, wrong)
            # the right answer only inside the think block is not an answer
            assert task.reward(ex, f"<think>\n{ex.answer}\n</think>\n\n") == 0.0
            assert task.reward(ex, f"<think>\n{ex.answer}") == 0.0


@pytest.mark.parametrize("name", T.names())
def test_deterministic_by_seed(name):
    a = list(T.examples(name, 20, seed=7, tiers=T.get(name).tiers[:2]))
    b = list(T.examples(name, 20, seed=7, tiers=T.get(name).tiers[:2]))
    c = list(T.examples(name, 20, seed=8, tiers=T.get(name).tiers[:2]))
    assert a == b
    assert [x.messages for x in a] != [x.messages for x in c]


@pytest.mark.parametrize("name", T.names())
def test_train_and_heldout_disjoint(name):
    train = {ex.meta["key"] for ex in T.examples(name, 300, seed=1, split="train")}
    held = {ex.meta["key"] for ex in T.examples(name, 100, seed=1, split="heldout")}
    assert not train & held
    assert all(split_of(k) == "train" for k in train) and all(split_of(k) == "heldout" for k in held)
    assert len(held) > 20  # the held-out split is not degenerate


def test_arith_tier1_is_two_digit_addition_with_carry_and_splits_partition_it():
    exs = list(T.examples("arith", 200, seed=3, split="heldout"))
    for ex in exs:
        a, b = ex.meta["a"], ex.meta["b"]
        assert 10 <= a <= 99 and 10 <= b <= 99 and a % 10 + b % 10 >= 10 and ex.answer == str(a + b)
    # the problem identity ignores operand order: 38 + 57 and 57 + 38 land in the same split
    for ex in exs:
        a, b = ex.meta["a"], ex.meta["b"]
        assert split_of(f"arith+{min(a, b)},{max(a, b)}") == "heldout"


def test_lookup_heldout_keys_never_appear_in_training_contexts():
    held = {ex.meta["asked"] for ex in T.examples("lookup", 60, seed=2, split="heldout")}
    for ex in T.examples("lookup", 60, seed=2, split="train"):
        words = set(ex.messages[0]["content"].replace("\n", " ").replace("|", " ").split())
        assert not held & words


def test_lookup_scales_to_long_contexts():
    task = T.get("lookup")
    ex = task.sample(random.Random(0), lang="en", tier=max(task.tiers))
    assert ex.meta["pairs"] == 1024 and ex.messages[0]["content"].count("\n") > 1024
    # naming every value of the context is not an answer
    assert task.reward(ex, ex.answer + ", " + ", ".join(map(str, ex.meta["others"][:3]))) == 0.0


@pytest.mark.parametrize("name", T.names())
def test_conversation_renders_reference_reply_in_both_modes(name):
    ex = T.get(name).sample(random.Random(5), lang="ja", tier=1)
    for reasoning in (True, False):
        conv = ex.conversation(reasoning=reasoning)
        text, spans = render_with_spans(conv, tools=ex.tools, enable_thinking=reasoning)
        prompt = render(ex.messages, tools=ex.tools, enable_thinking=reasoning, add_generation_prompt=True)
        assert text.startswith(prompt)
        generated = text[spans[0][0]:spans[0][1]]
        assert generated.endswith("<|endofturn|>") and text[len(prompt):].startswith(generated)
        # the assistant turn (generation prompt + generated text) is exactly the reference reply
        turn = text[len(render(ex.messages, tools=ex.tools)) + len("<|assistant|>\n"):]
        assert turn.split("<|endofturn|>")[0] == ex.reference(reasoning)
        assert T.get(name).reward(ex, generated) == 1.0


def test_math_verify_is_safe_off_the_main_thread():
    task = T.get("arith")
    ex = task.sample(random.Random(0), lang="en", tier=2)
    out = []
    t = threading.Thread(target=lambda: out.append((task.reward(ex, ex.reference()), task.reward(ex, "1"))))
    t.start()
    t.join()
    assert out == [(1.0, 0.0)]


def test_instruct_rules():
    from kexa.tasks.instruct import SENTENCES, detect_language, list_items

    for topic in SENTENCES.values():  # every reference sentence is identified as its language
        for lang, sentences in topic.items():
            assert all(detect_language(s) == lang for s in sentences), (lang, sentences)
    assert list_items("1. apple\n2. pear\n- fig") == ["apple", "pear", "fig"]
    task, rng = T.get("instruct"), random.Random(0)
    seen = set()
    while len(seen) < 5:
        ex = task.sample(rng, lang="en", tier=rng.choice([1, 2]))
        kind, meta = ex.meta["kind"], ex.meta
        seen.add(kind)
        if kind == "count":  # the rule is the count: N unrelated words follow it, N + 1 do not
            assert task.reward(ex, ", ".join(f"w{i}" for i in range(meta["n"]))) == 1.0
            assert task.reward(ex, ", ".join(f"w{i}" for i in range(meta["n"] + 1))) == 0.0
            assert task.reward(ex, ", ".join(["w"] * meta["n"])) == 0.0  # repeats are not N things
        if kind == "avoid":  # the word anywhere in the reply breaks the rule
            assert task.reward(ex, ex.answer + f" (not {meta['kw']})") == 0.0
        if kind == "json":
            assert task.reward(ex, "```json\n" + ex.answer + "\n```") == 1.0
            assert task.reward(ex, ex.answer[:-1]) == 0.0  # broken JSON
        if kind == "language":  # the prompt's own language is the classic failure
            assert task.reward(ex, "The weather is sunny and warm today.") == (1.0 if meta["target"] == "en" else 0.0)


def test_tool_calls_are_checked_strictly():
    from kexa.tasks.tool import call_text

    task = T.get("tool")
    ex = task.sample(random.Random(3), lang="de", tier=2)
    assert ex.tools and len(ex.tools) == 3 and ex.after[0]["role"] == "tool"
    call = json.loads(ex.answer[len("<tool_call>"):-len("</tool_call>")])
    assert task.reward(ex, ex.answer + "\n" + ex.answer) == 0.0  # two calls
    other = next(n for n in ("calculator", "convert_currency", "get_weather") if n != call["name"])
    assert task.reward(ex, call_text(other, call["arguments"])) == 0.0
    as_string = '<tool_call>{"name": "%s", "arguments": "%s"}</tool_call>' % (call["name"], "x")
    assert task.reward(ex, as_string) == 0.0
    assert task.reward(ex, "<tool_call>{not json}</tool_call>") == 0.0
    # tier 3: the dialogue holds call and result; the reply is the final answer, not another call
    ex3 = task.sample(random.Random(3), lang="ko", tier=3)
    assert [m["role"] for m in ex3.messages] == ["user", "assistant", "tool"]
    assert task.reward(ex3, ex3.answer) == 1.0 and task.reward(ex3, ex3.answer + "\n" + ex.answer) == 0.0
    # the calculator accepts any expression with the right value
    calc = next(e for e in T.examples("tool", 50, seed=1, tiers=(1,)) if e.meta["tool"] == "calculator")
    a, b = calc.meta["check"]["value"], 1
    assert task.reward(calc, call_text("calculator", {"expression": f"({a}) * {b}"})) == 1.0


def test_korean_particles_agree():
    from kexa.tasks.lang import josa

    assert [josa(w, "을") for w in ("12", "15", "10", "사과", "책", "raka", "bal")] == \
        ["12를", "15를", "10을", "사과를", "책을", "raka를", "bal을"]
    assert [josa(w, "으로") for w in ("서울", "바다", "부산", "17")] == ["서울로", "바다로", "부산으로", "17로"]


def test_rows_round_trip_and_trl_reward_signature():
    exs = [T.get(n).sample(random.Random(1), lang="vi", tier=1) for n in T.names()]
    rows = [T.to_row(ex) for ex in exs]
    assert [T.from_row(r) for r in rows] == exs
    import datasets

    ds = datasets.Dataset.from_list(rows)  # the rows are a valid dataset
    completions = [ex.reference() for ex in exs] + [[{"role": "assistant", "content": exs[0].reference()}], "x"]
    columns = {"example": list(ds["example"]) + [rows[0]["example"], None]}
    rewards = T.reward_function(prompts=[r["prompt"] for r in rows] + [None, None], completions=completions, **columns)
    assert rewards == [1.0] * len(exs) + [1.0, None]


class ByteTokenizer:
    def encode(self, text):
        return list(text.encode("utf-8"))


@pytest.mark.parametrize("reasoning", [True, False])
def test_encode_masks_exactly_the_assistant_reply(reasoning):
    ex = T.get("arith").sample(random.Random(2), lang="ko", tier=1)
    enc = ex.encode(ByteTokenizer(), reasoning=reasoning)
    target = bytes(i for i, m in zip(enc.ids, enc.assistant_mask) if m).decode("utf-8")
    prompt = bytes(i for i, m in zip(enc.ids, enc.assistant_mask) if not m).decode("utf-8")
    # unmasked: the generation prompt of that mode (and the newline after the turn)
    assert prompt == render(ex.messages, enable_thinking=reasoning, add_generation_prompt=True) + "\n"
    assert target == (f"{ex.reasoning}\n</think>\n\n{ex.answer}" if reasoning else ex.answer) + "<|endofturn|>"


def test_math_check_off_main_thread_is_bounded(monkeypatch):
    import time

    import kexa.tasks.verify as V

    def stuck(gold, pred, main):  # a check that never returns in time
        time.sleep(0.5)
        return True

    monkeypatch.setattr(V, "_math_equal_unbounded", stuck)
    monkeypatch.setattr(V, "TIMEOUT_S", 0.05)
    out = []
    t = threading.Thread(target=lambda: out.append(V.math_equal("1", "1")))
    t.start()
    t.join()
    assert out == [False]


def test_register_a_longer_lookup_variant():
    from kexa.tasks.lookup import Lookup

    variant = T.register(Lookup(pairs={1: 2048}, name="lookup_2k"))
    try:
        assert T.get("lookup_2k") is variant and T.get("lookup").pairs[1] == 8
        ex = variant.sample(random.Random(0), lang="de")
        assert ex.meta["pairs"] == 2048 and variant.reward(ex, ex.reference()) == 1.0
    finally:
        T._REGISTRY.pop("lookup_2k")


def test_same_examples_in_another_process_with_another_hash_seed():
    """No set or dict ordering leaks into generation: another process (string hashing unrandomised,
    unlike this one's) draws the same examples."""
    import os
    import subprocess
    import sys

    code = ("import json, kexa.tasks as T\n"
            "print(json.dumps([T.to_row(e)['example'] for n in T.names() for e in T.examples(n, 5, seed=11)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"}).stdout
    here = [T.to_row(e)["example"] for n in T.names() for e in T.examples(n, 5, seed=11)]
    assert json.loads(out) == here


def test_verbose_replies_are_read_like_a_person_would():
    strings, sorting = T.get("strings"), T.get("sorting")
    rng = random.Random(4)
    ex = next(e for e in (strings.sample(rng, lang="en") for _ in range(50)) if e.meta["op"] == "reverse")
    w, a = ex.meta["word"], ex.answer
    assert strings.reward(ex, f'The reversed string is "{a}".') == 1.0
    assert strings.reward(ex, f"Reversed: **{a}**") == 1.0
    assert strings.reward(ex, f'"{a}" reversed is "{w}".') == (1.0 if a == w else 0.0)  # the last answer counts
    ex = next(e for e in (sorting.sample(rng, lang="en") for _ in range(50)) if e.meta["op"] == "asc")
    shown = ", ".join(map(str, ex.meta["xs"]))
    assert sorting.reward(ex, f"Input: {shown}\nSorted: {ex.answer}") == 1.0
    assert sorting.reward(ex, f"{ex.answer}\nInput: {shown}") == 0.0
