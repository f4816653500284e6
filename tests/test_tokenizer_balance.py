"""Language-balanced SuperBPE stage 2 (`stage2_balance`): direction, equalising, exactness, raw min_frequency,
bad input."""

import json
import random

import pytest

from kexa.tokenizer import train_bpe, train_superbpe
from kexa.tokenizer.superword import learn_merges
from kexa.tokenizer.train import balance_plan, stage2_weights

VOCAB, TRANSITION = 1400, 900
LATIN = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70 open syllables
HANGUL = [chr(0xAC00 + 28 * i) for i in range(0, 399, 7)]  # 57 open Hangul syllables (3 UTF-8 bytes each)


def _language(syllables: list[str], n_lines: int, seed: int) -> str:
    """Lines of Zipf-distributed 2-3 word phrases over a 150-word lexicon: multi-word pairs repeat."""
    r = random.Random(seed)
    words = ["".join(r.choice(syllables) for _ in range(r.randint(1, 3))) for _ in range(150)]
    phrases = [" ".join(r.choice(words) for _ in range(r.randint(2, 3))) for _ in range(100)]
    zipf = [1 / (k + 1) for k in range(len(phrases))]
    return "\n".join(" ".join(r.choices(phrases, zipf)[0] for _ in range(r.randint(2, 5)))
                     for _ in range(n_lines)) + "\n"


@pytest.fixture(scope="module")
def two_languages(tmp_path_factory):
    """A Latin-script language with ten times the lines of a Hangul one (so far fewer pair occurrences)."""
    root = tmp_path_factory.mktemp("two")
    (root / "en.txt").write_text(_language(LATIN, 4000, 0), "utf-8")
    (root / "ko.txt").write_text(_language(HANGUL, 400, 1), "utf-8")
    return {"en": [str(root / "en.txt")], "ko": [str(root / "ko.txt")]}


def _stage2_tokens(tok) -> list[str]:
    """Texts of the tokens stage 2 added (ids from the transition on)."""
    t = tok.meta["transition"]
    return [tok.decode([i]) for i in range(t, tok.vocab_size)]


def _korean(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


@pytest.fixture(scope="module")
def pooled_and_balanced(two_languages):
    pooled = train_superbpe(two_languages, VOCAB, transition=TRANSITION, stage2_balance=None)
    balanced = train_superbpe(two_languages, VOCAB, transition=TRANSITION, stage2_balance="tokens")
    return pooled, balanced


def test_balanced_stage2_gives_the_rarer_language_superwords(pooled_and_balanced):
    pooled, balanced = pooled_and_balanced
    # stage 1 is the same BPE in both: only the stage-2 merges may differ
    assert pooled.hf.get_vocab().keys() != balanced.hf.get_vocab().keys()
    p_vocab, b_vocab = pooled.hf.get_vocab(), balanced.hf.get_vocab()
    assert {t for t, i in p_vocab.items() if i < TRANSITION} == {t for t, i in b_vocab.items() if i < TRANSITION}
    ko_pooled = [t for t in _stage2_tokens(pooled) if _korean(t)]
    ko_balanced = [t for t in _stage2_tokens(balanced) if _korean(t)]
    # Korean has ~10x fewer occurrences per pair: pooled counts hand stage 2 mostly to English
    assert len(ko_balanced) > 1.5 * len(ko_pooled), (len(ko_pooled), len(ko_balanced))
    assert set(ko_balanced) - set(ko_pooled), "balancing learned no Korean token that pooling missed"
    assert balanced.meta["stage2_balance"] == "tokens" and pooled.meta["stage2_balance"] is None
    w = balanced.meta["stage2_group_weights"]
    assert w["en"] == 1.0 and w["ko"] > 5  # per occurrence, Korean weighs ~ its token-count ratio


def test_balanced_tokenizer_compresses_the_rarer_language_better(pooled_and_balanced):
    pooled, balanced = pooled_and_balanced
    ko, en = _language(HANGUL, 100, 7), _language(LATIN, 100, 8)  # held out: other lines, same lexicons
    assert balanced.stats([ko])["bytes_per_token"] > pooled.stats([ko])["bytes_per_token"]
    assert balanced.stats([en])["bytes_per_token"] <= pooled.stats([en])["bytes_per_token"]


def test_shares_move_superwords_between_groups(two_languages):
    en_heavy = train_superbpe(two_languages, VOCAB, transition=TRANSITION, stage2_balance={"en": 10, "ko": 1})
    ko_heavy = train_superbpe(two_languages, VOCAB, transition=TRANSITION, stage2_balance={"en": 1, "ko": 10})
    count = lambda tok: sum(map(_korean, _stage2_tokens(tok)))  # noqa: E731
    assert count(ko_heavy) > count(en_heavy)


def test_stage2_weights_are_share_over_stage1_tokens():
    from collections import Counter
    groups = {"a": Counter({"xy": 10, "z": 30}), "b": Counter({"xy": 1, "uv": 4})}
    chunks, lengths = ["xy", "uv"], [2, 2]
    # tokens: a = 10*2 + 30*1 = 50, b = 1*2 + 4*2 = 10 -> b weighs 5x per occurrence
    weights, per_group = stage2_weights(groups, chunks, lengths, {"a": 1, "b": 1})
    assert per_group == {"a": 1.0, "b": 5.0}
    assert weights == [10 * 10_000 + 1 * 50_000, 4 * 50_000]
    weights, per_group = stage2_weights(groups, chunks, lengths, {"a": 3, "b": 0})
    assert per_group == {"a": 1.0, "b": 0.0} and weights == [10 * 10_000, 0]


def test_weights_rank_pairs_but_min_frequency_counts_occurrences():
    toks = ["a", "b", "c", "d"]
    # (a, b) seen once with a huge weight: too rare to merge; (c, d) seen 5 times merges
    assert learn_merges([[0, 1], [2, 3]], [1, 5], list(toks), 10, weights=[1000, 5]) == [(2, 3)]
    # seen twice, the heavy pair comes first although (c, d) occurs more often
    assert learn_merges([[0, 1], [2, 3]], [2, 5], list(toks), 10, weights=[1000, 5]) == [(0, 1), (2, 3)]
    assert learn_merges([[0, 1], [2, 3]], [2, 5], list(toks), 10) == [(2, 3), (0, 1)]  # unweighted: by count
    with pytest.raises(ValueError, match="weights: 1 values for 2 chunks"):
        learn_merges([[0, 1], [2, 3]], [2, 5], list(toks), 10, weights=[1])


def test_equalize_evens_out_the_gains_over_plain_bpe(two_languages, pooled_and_balanced):
    pooled, balanced = pooled_and_balanced
    equal = train_superbpe(two_languages, VOCAB, transition=TRANSITION, stage2_balance="equalize")
    bpe = train_bpe([f for fs in two_languages.values() for f in fs], VOCAB)
    text = {g: open(fs[0], encoding="utf-8").read() for g, fs in two_languages.items()}

    def gains(tok):  # bytes/token over plain BPE's, on each language's training text
        return {g: tok.stats([t])["bytes_per_token"] / bpe.stats([t])["bytes_per_token"] - 1 for g, t in text.items()}

    # the loop's own measurement (segmentation counts) is the tokenizer's real gain on that text
    assert equal.meta["stage2_train_gain"] == pytest.approx(gains(equal), abs=2e-3)
    g_pooled, g_tokens, g_equal = gains(pooled), gains(balanced), gains(equal)
    spread = lambda g: max(g.values()) - min(g.values())  # noqa: E731
    assert spread(g_equal) < 0.5 * spread(g_pooled) and spread(g_equal) <= spread(g_tokens) + 1e-9, (g_pooled, g_equal)
    assert min(g_equal.values()) > min(g_pooled.values())
    assert equal.meta["stage2_rounds"] == 3 and set(equal.meta["stage2_shares"]) == {"en", "ko"}
    # its stage 1 (cut from the plain BPE it measures against) is the stage 1 trained to the transition
    assert {t for t, i in equal.hf.get_vocab().items() if i < TRANSITION} == \
        {t for t, i in pooled.hf.get_vocab().items() if i < TRANSITION}
    first = lambda tok: json.loads(tok.hf.to_str())["model"]["merges"][:TRANSITION - 384]  # noqa: E731
    assert first(equal) == first(pooled)


def test_balance_forms_resolve_per_group():
    assert balance_plan("none", ["a", "b"]) is None and balance_plan(None, ["a", "b"]) is None
    assert balance_plan("tokens", ["a", "b"]) == ({"a": 1.0, "b": 1.0}, set())
    assert balance_plan("equalize", ["a", "b"]) == ({"a": 1.0, "b": 1.0}, {"a", "b"})
    # "*" covers the groups not named; named groups the text lacks are then ignored
    assert balance_plan({"code": 2, "stem": 1, "*": "equalize"}, ["ko", "code"]) == ({"ko": 1.0, "code": 2.0}, {"ko"})
    assert balance_plan({"a": 3, "b": "equalize"}, ["a", "b"]) == ({"a": 3.0, "b": 1.0}, {"b"})


@pytest.mark.parametrize("balance, message", [
    ("bytes", r"stage2_balance='bytes': use \"none\", \"tokens\", \"equalize\" or \{group: share or \"equalize\"\}"),
    ({"en": 1}, r"stage2_balance names groups \['en'\] but the training text has \['en', 'ko'\]"),
    ({"en": -1, "ko": 1}, r"values must be finite shares >= 0 or \"equalize\", not all 0"),
    ({"en": 0, "ko": 0}, r"values must be finite shares >= 0 or \"equalize\", not all 0"),
    ({"en": "2", "ko": 1}, r"values must be finite shares >= 0 or \"equalize\", not all 0"),
    ({"fr": 1, "*": 0}, r"gives every group of the training text a zero share"),
])
def test_bad_balance_is_one_clear_error(two_languages, balance, message):
    with pytest.raises(ValueError, match=message) as e:
        train_superbpe(two_languages, VOCAB, stage2_balance=balance)
    assert "\n" not in str(e.value)


def test_cli_balance_flag(two_languages, tmp_path, capsys):
    from kexa.cli import main

    en, ko = two_languages["en"][0], two_languages["ko"][0]
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--input", en, ko, "--vocab-size", "1000", "--out", str(out),
                 "--stage2-balance", f"{en}=2,{ko}=3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stage2_balance"] == {en: 2.0, ko: 3.0} and summary["vocab_size"] == 1000
    for bad, says in [("en=x", "use none, tokens, equalize or NAME=SHARE|equalize"), ("nope=1", "names groups ['nope']")]:
        assert main(["tokenizer", "train", "--input", en, ko, "--vocab-size", "1000", "--out",
                     str(tmp_path / "bad"), "--stage2-balance", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err, err
        assert not (tmp_path / "bad").exists()


def test_recipe_setting_and_resume_of_older_checkpoints():
    from kexa.train.recipe import RecipeError, recipe_from_dict, resume_mismatches

    assert recipe_from_dict({}).tokenizer.stage2_balance == {"code": 1.0, "stem": 1.0, "*": "equalize"}
    shares = recipe_from_dict({"tokenizer": {"stage2_balance": {"en": 2, "ko": 3}}}).tokenizer.stage2_balance
    assert shares == {"en": 2, "ko": 3}
    with pytest.raises(RecipeError, match=r"\[tokenizer\]: stage2_balance='token'"):
        recipe_from_dict({"tokenizer": {"stage2_balance": "token"}})
    # a checkpoint saved before the setting existed trained its tokenizer on raw counts ("none")
    old = recipe_from_dict({}).to_dict()
    del old["tokenizer"]["stage2_balance"]
    assert resume_mismatches(old, recipe_from_dict({"tokenizer": {"stage2_balance": "none"}}).to_dict()) == []
    assert resume_mismatches(old, recipe_from_dict({"tokenizer": {"stage2_balance": "tokens"}}).to_dict()) == [
        "tokenizer.stage2_balance: checkpoint 'none', now 'tokens'"]
