"""The reasoning-style long-context tasks of kexa.data.synthetic: a two-hop question over several
documents (`multidoc`) and aggregation over entries spread through the window (`aggregate`).
Byte-level "tokens" keep the text exact, so every answer is checked against the facts it must be
derived from."""

import random
import re

import numpy as np
import pytest

from kexa.data.synthetic import TEMPLATES, Filler, SyntheticConfig, SyntheticGenerator, Vocab, generated_filler_text


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8")


FILLER = Filler(np.asarray(encode(generated_filler_text(200))))


def generator(task: str, languages=("en",), **kw) -> SyntheticGenerator:
    return SyntheticGenerator(encode, FILLER, SyntheticConfig(tasks={task: 1.0}, languages=list(languages), **kw))


def pattern(template: str, **groups: str) -> str:
    """A template as a regex: {name} -> the named group's pattern; the rest literal."""
    out = re.escape(template)
    for name, rx in groups.items():
        out = out.replace(re.escape("{" + name + "}"), f"(?P<{name}>{rx})")
    return out


@pytest.mark.parametrize("lang", sorted(TEMPLATES))
def test_multidoc_answer_needs_two_facts_from_two_documents(lang):
    t = TEMPLATES[lang]
    gen = generator("multidoc", [lang], max_documents=5)
    rng = random.Random(3)
    for _ in range(8):
        text = decode(gen.example(rng, 900))
        assert len(encode(text)) == 900
        asked = re.search(pattern(t["hop_question"], key=r"\w+"), text)["key"]
        body = text[:text.index(t["hop_question"].format(key=asked))]
        docs = re.split(pattern(t["document"], n=r"\d+"), body)[1:]  # text of each document, in order
        assert len(docs) >= 2
        member = pattern(t["member"], key=r"\w+", group=r"\w+")
        value = pattern(t["prefix"], key=r"\w+") + r" (?P<value>\d+)"
        where_member = {m["key"]: (i, m["group"]) for i, d in enumerate(docs) for m in re.finditer(member, d)}
        where_value = {m["key"]: (i, m["value"]) for i, d in enumerate(docs) for m in re.finditer(value, d)}
        doc_m, group = where_member[asked]
        doc_v, number = where_value[group]
        assert doc_m != doc_v  # the two hops are in different documents
        answer = text[text.index(t["hop_question"].format(key=asked)):]
        assert answer.endswith(t["member"].format(key=asked, group=group) + " "
                               + t["prefix"].format(key=group) + " " + number + t["suffix"] + "\n")
        assert Vocab("train")._mine(asked) and Vocab("train")._mine(group)  # train-split names only


@pytest.mark.parametrize("lang", sorted(TEMPLATES))
def test_aggregate_answer_is_the_sum_or_count_of_every_entry(lang):
    t = TEMPLATES[lang]
    gen = generator("aggregate", [lang], aggregate_items=(6, 30))
    rng = random.Random(5)
    seen_ops = set()
    for _ in range(12):
        text = decode(gen.example(rng, 1200))
        assert len(encode(text)) == 1200
        entries = [int(m["value"]) for m in re.finditer(pattern(t["entry"], key=r"\w+", value=r"\d+"), text)]
        assert len(entries) >= 6
        count = re.search(pattern(t["count_question"], x=r"\d+"), text)
        if count:
            want, prefix = sum(v > int(count["x"]) for v in entries), t["count_prefix"]
            seen_ops.add("count")
        else:
            assert t["sum_question"] in text
            want, prefix = sum(entries), t["sum_prefix"]
            seen_ops.add("sum")
        assert text.endswith(f"{prefix} {want}{t['suffix']}\n"), text[-80:]
    assert seen_ops == {"sum", "count"}


def test_short_windows_keep_the_task_with_fewer_items_and_packs_stay_exact():
    for task, marker in (("multidoc", "What is the secret number of the group"), ("aggregate", "entries")):
        gen = generator(task, max_documents=4, aggregate_items=(10, 20), min_example=40)
        rng = random.Random(0)
        texts = [decode(gen.example(rng, 400)) for _ in range(10)]  # too short for the drawn sizes
        assert all(marker in x for x in texts), task
        pack = gen.pack(random.Random(1), 512)
        assert sum(len(x) + 1 for x in pack) == 512 and pack == gen.pack(random.Random(1), 512)


def test_reasoning_task_settings_are_validated():
    with pytest.raises(ValueError, match="aggregate_items"):
        SyntheticConfig(aggregate_items=(0, 3))
    with pytest.raises(ValueError, match="max_documents"):
        SyntheticConfig(max_documents=1)
    with pytest.raises(ValueError, match="synthetic tasks"):
        SyntheticConfig(tasks={"sorting": 1.0})
    assert SyntheticConfig(aggregate_items=[2, 5]).aggregate_items == (2, 5)  # a TOML list becomes the tuple


def test_236b_extension_recipe_mixes_the_reasoning_tasks():
    from kexa.speedrun import REPO
    from kexa.train.extend import load_config
    config = load_config(REPO / "configs/extend_k-exaone-236b.toml")
    assert config.synthetic.tasks.get("multidoc", 0) > 0 and config.synthetic.tasks.get("aggregate", 0) > 0
