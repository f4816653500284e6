"""NIAH evaluation, synthetic retrieval data and the long-document stream.

The evaluator must tell a model that knows the answer from one that does not: an oracle stub reads
the needle from the prompt (accuracy 1 in every cell), a guesser answers a value it cannot have
seen (accuracy 0), and a distracted stub answers the first fact of the haystack (between the two
in the multi-key variant). Plus: the grid and heat map cover every cell, depths place the needle
where asked, runs are deterministic, the held-out shards are the haystack, and the real engine
path and `kexa eval niah --json` work end to end on a tiny model.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.cli import main as kexa_main
from kexa.data.longdoc import documents, pack_documents, write_longdoc_shards
from kexa.data.shards import TokenShards, write_shards
from kexa.data.synthetic import TEMPLATES, Filler, SyntheticConfig, SyntheticGenerator, Vocab, answer_of, \
    write_synthetic_shards
from kexa.eval.niah import NiahConfig, digit_accuracy, evaluate_niah, haystack_from_shards, plot_heatmap
from kexa.tokenizer import Tokenizer, train_bpe

HELDOUT = ("The river runs past the old mill and the bridge. Children walk to school in the morning. "
           "A quiet market opens near the station when the light is grey. ") * 6
FACTS = " ".join(t["prefix"] + " 1234" + t["suffix"] + " " + t["question"] + " " + t["alias"] + " " + t["repeat"]
                 for t in TEMPLATES.values()).replace("{key}", "Velmora").replace("{other}", "Tarsen")


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    d = tmp_path_factory.mktemp("niah_tok")
    (d / "corpus.txt").write_text((HELDOUT + FACTS + " 0123456789 ") * 20, "utf-8")
    return train_bpe([str(d / "corpus.txt")], vocab_size=600)


@pytest.fixture(scope="module")
def haystack(tok, tmp_path_factory):
    """The real path: held-out documents written as token shards, read back as the haystack."""
    d = tmp_path_factory.mktemp("heldout")
    docs = [tok.encode(p.strip() + ".") for p in HELDOUT.split(".") if p.strip()]
    write_shards(docs, d, tok.vocab_size, tok.eos_id)
    return haystack_from_shards([TokenShards(d)])


def needles_in(text: str) -> list[tuple[str, str]]:
    """(key, value) of every fact in the text, in order, whatever its language."""
    found = []
    for t in TEMPLATES.values():
        pattern = re.escape(t["prefix"]).replace(re.escape("{key}"), r"(\w+)") + r" (\d+)"
        found += [(m.start(), m.group(1), m.group(2)) for m in re.finditer(pattern, text)]
    return [(k, v) for _, k, v in sorted(found)]


def asked_key(text: str) -> str:
    for t in TEMPLATES.values():
        pattern = re.escape(t["question"]).replace(re.escape("{key}"), r"(\w+)")
        m = list(re.finditer(pattern, text))
        if m:
            return m[-1].group(1)
    raise AssertionError("no question in the prompt")


def oracle(tok):
    def retrieve(prompts, n):
        out = []
        for p in prompts:
            text = tok.decode(p)
            value = dict(needles_in(text))[asked_key(text)]
            out.append(tok.encode(" " + value + ".")[:n])
        return out
    return retrieve


def guesser(tok):
    rng = random.Random(0)
    vocab = Vocab("train")  # a training-split value is never a needle's (held-out) value
    return lambda prompts, n: [tok.encode(" " + vocab.value(rng))[:n] for _ in prompts]


def distracted(tok):
    return lambda prompts, n: [tok.encode(" " + needles_in(tok.decode(p))[0][1])[:n] for p in prompts]


def test_evaluator_tells_a_model_that_knows_from_one_that_does_not(tok, haystack, tmp_path):
    cfg = NiahConfig(lengths=[128, 192, 256], depths=[0.0, 0.3, 0.7, 1.0], samples=2, seed=3)
    knows = evaluate_niah(oracle(tok), tok, cfg, haystack)
    blind = evaluate_niah(guesser(tok), tok, cfg, haystack)
    assert knows["accuracy"] == {"128": 1.0, "192": 1.0, "256": 1.0} and knows["digit_accuracy"]["128"] == 1.0
    assert blind["accuracy"] == {"128": 0.0, "192": 0.0, "256": 0.0}
    for r in (knows, blind):  # every cell of the grid is there, once, with its samples
        assert np.asarray(r["grid"]).shape == (3, 4)
        assert sorted((c["length"], c["depth"]) for c in r["cells"]) == sorted(
            (n, d) for n in cfg.lengths for d in cfg.depths)
        assert all(c["n"] == 2 for c in r["cells"])
        json.dumps(r)
    png = plot_heatmap(knows, tmp_path / "niah.png")
    import matplotlib.image
    img = matplotlib.image.imread(png)
    assert img.shape[0] > 50 and img.shape[1] > 50


def test_multikey_variant_separates_retrieval_from_grabbing_any_fact(tok, haystack):
    cfg = NiahConfig(lengths=[384], depths=[0.2, 0.5, 0.8], samples=4, needles=4, seed=1)
    assert evaluate_niah(oracle(tok), tok, cfg, haystack)["mean_accuracy"] == 1.0
    first = evaluate_niah(distracted(tok), tok, cfg, haystack)
    assert first["task"] == "niah_multikey" and 0.0 < first["mean_accuracy"] < 1.0


def test_prompts_are_exact_deterministic_and_needles_sit_at_their_depth(tok, haystack):
    from kexa.eval.niah import CaseBuilder
    cfg = NiahConfig(lengths=[300], depths=[0.0, 0.25, 0.5, 0.75, 1.0], samples=1, languages=["en", "ko"], seed=5)
    b = CaseBuilder(tok.encode, haystack, cfg)
    cases, again = b.cases(300), CaseBuilder(tok.encode, haystack, cfg).cases(300)
    assert [c.prompt for c in cases] == [c.prompt for c in again]
    assert all(len(c.prompt) + b.margin == 300 for c in cases)
    at = [c.needle_at for c in cases]
    assert at == sorted(at) and at[0] == 0 and at[-1] > 200
    assert [c.lang for c in cases] == ["en", "ko", "en", "ko", "en"]
    other = CaseBuilder(tok.encode, haystack, NiahConfig(lengths=[300], depths=cfg.depths, samples=1, seed=6)).cases(300)
    assert [c.key for c in other] != [c.key for c in cases]
    # the haystack is the held-out stream: every 8-gram of filler before the needle occurs in it
    stream = haystack.tokens.tolist()
    grams = {tuple(stream[i:i + 8]) for i in range(len(stream) - 8)} | {tuple((stream * 2)[i:i + 8])
                                                                        for i in range(len(stream))}
    c = cases[-1]
    assert all(tuple(c.prompt[i:i + 8]) in grams for i in range(0, c.needle_at - 8, 7))


def test_engine_path_and_cli_json(tok, tmp_path, capsys):
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "hay.txt").write_text(HELDOUT, "utf-8")
    code = kexa_main(["eval", "niah", "--model", str(tmp_path / "m"), "--lengths", "128,144", "--depths", "0,0.5,1",
                      "--samples", "1", "--text", str(tmp_path / "hay.txt"), "--out", str(tmp_path / "o"), "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    last = json.loads(out[-1])
    assert set(last["accuracy"]) == {"128", "144"} and np.asarray(last["grid"]).shape == (2, 3)
    assert all(0.0 <= a <= 1.0 for a in last["accuracy"].values()) and last["haystack"].startswith("text file")
    assert all(isinstance(case["answer"], str) for c in last["cells"] for case in c["cases"])
    assert (tmp_path / "o" / "niah.png").exists() and (tmp_path / "o" / "niah.json").exists()
    code = kexa_main(["eval", "niah", "--model", str(tmp_path / "m"), "--lengths", "99999", "--json"])
    assert code == 2 and "context" in capsys.readouterr().err


def test_answer_extraction():
    assert answer_of(" 4821.") == "4821" and answer_of("4821입니다.") == "4821"
    assert answer_of(" 48210") == "48210" and answer_of(" x4821") == ""
    assert digit_accuracy("4821", "4821") == 1.0 and digit_accuracy("4921", "4821") == 0.75
    assert digit_accuracy("", "4821") == 0.0


# ------------------------------------------------------------------ synthetic + long documents
def test_synthetic_packs_are_exact_deterministic_and_hold_the_task(tok, tmp_path):
    filler = Filler(np.asarray(tok.encode(HELDOUT)))
    gen = SyntheticGenerator(tok.encode, filler, SyntheticConfig(languages=["en", "de"], min_example=40))
    rng_a, rng_b = random.Random(7), random.Random(7)
    for _ in range(5):
        pack = gen.pack(rng_a, 256)
        assert sum(len(x) + 1 for x in pack) == 256
        assert pack == gen.pack(rng_b, 256)
    text = "".join(tok.decode(x) for _ in range(20) for x in gen.pack(rng_a, 256))
    facts = needles_in(text)
    assert facts and re.search(r"Repeat the list:|Wiederhole die Liste:", text)
    train_keys = {k for k, _ in facts}
    assert all(Vocab("train")._mine(k) for k in train_keys) and not any(Vocab("eval")._mine(k) for k in train_keys)
    # a short example keeps its task with fewer facts / hops / items instead of becoming filler
    for task in ("kv", "multihop", "copy"):
        short = SyntheticGenerator(tok.encode, filler, SyntheticConfig(tasks={task: 1.0}, max_facts=4, min_example=40))
        texts = [tok.decode(short.example(rng_a, 96)) for _ in range(10)]
        assert all(("What is the secret number of" if task != "copy" else "Repeat the list:") in t for t in texts), task
    meta = write_synthetic_shards(gen, tmp_path / "syn", 256, 2000, tok.vocab_size, tok.eos_id, seed=1)
    sh = TokenShards(tmp_path / "syn")
    assert meta["n_tokens"] % 256 == 0
    ends = sh.window(0, sh.n_tokens).reshape(-1, 256)[:, -1]
    assert (ends == tok.eos_id).all()  # every pack ends with EOS: loader windows never span two packs


def test_pretraining_mixture_can_name_the_synthetic_source(tok, tmp_path):
    """A recipe whose curriculum weights "synthetic" gets retrieval packs at its seq_len as a train
    source (sized for the run, facts in the recipe's languages, train split); recipes that do not
    name it are unchanged (no synthetic source, corpus domains as before)."""
    from kexa.train.prepare import SYNTHETIC, prepare_synthetic, recipe_domains, synthetic_share
    from kexa.train.recipe import recipe_from_dict
    d = {"model": {"preset": "tiny"}, "data": {"seq_len": 128, "batch_size": 4}, "train": {"steps": 20},
         "curriculum": [{"name": "a", "fraction": 0.5, "weights": {"en": 3.0, "synthetic": 1.0}},
                        {"name": "b", "fraction": 0.5, "weights": {"en": 1.0, "de": 1.0}}]}
    recipe = recipe_from_dict(d)
    assert recipe_domains(recipe) == ["en", "de"] and synthetic_share(recipe) == pytest.approx(0.125)
    assert synthetic_share(recipe_from_dict(d | {"curriculum": d["curriculum"][1:]})) == 0
    assert synthetic_share(recipe_from_dict({"data": {"weights": {"en": 1.0, SYNTHETIC: 1.0}}})) == 0.5
    write_shards([tok.encode(p.strip() + ".") for p in HELDOUT.split(".") if p.strip()] * 4, tmp_path / "en",
                 tok.vocab_size, tok.eos_id)
    syn = prepare_synthetic(recipe, tok, {"en": TokenShards(tmp_path / "en")}, tmp_path / "cache")
    meta = json.loads((syn.path / "meta.json").read_text())
    assert meta["kind"] == "synthetic" and meta["seq_len"] == 128 and syn.n_tokens % 128 == 0
    assert syn.n_tokens >= 20 * 4 * 128 * 0.125  # the run's expected synthetic windows, not repeated
    text = tok.decode(syn.window(0, syn.n_tokens).tolist())
    facts = needles_in(text)
    assert facts and all(Vocab("train")._mine(k) for k, _ in facts)
    assert "What is the secret number of" in text and "geheime" not in text  # languages = the recipe's sources
    assert prepare_synthetic(recipe, tok, {"en": TokenShards(tmp_path / "en")}, tmp_path / "cache").path == syn.path


def test_longdoc_keeps_documents_whole(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 100, size=n) for n in [5, 30, 3, 62, 17, 9, 40, 150]]
    write_shards(docs, tmp_path / "src", vocab_size=128, eos_id=0)
    src = TokenShards(tmp_path / "src")
    assert [d.tolist() for d in documents(src)] == [d.tolist() for d in docs]
    filler = Filler.from_shards([src])  # synthetic filler / haystack: no document boundary inside
    assert 0 not in filler.tokens and filler.tokens.size == sum(d.size for d in docs)
    seqs = pack_documents(docs, 64, eos_id=0)
    assert all(s.size == 64 and s[-1] == 0 for s in seqs)
    flat = [s.tolist() for s in seqs]
    for d in docs[:-1]:  # every document of <= 63 tokens is contiguous inside one sequence
        d = d.tolist()
        assert any(any(s[i:i + len(d)] == d for i in range(64 - len(d) + 1)) for s in flat)
    assert sum(d.size for d in docs) == sum(int((s != 0).sum()) for s in seqs)  # nothing lost
    meta = write_longdoc_shards([src], tmp_path / "ld", 64, seed=0)
    assert meta["n_tokens"] == 64 * len(seqs) and TokenShards(tmp_path / "ld").window(63, 1)[0] == 0


def test_cli_haystack_is_the_corpus_heldout_split(tok, tmp_path):
    from kexa.data.corpus import build_corpus
    from kexa.eval.cli import corpus_haystack
    src = tmp_path / "texts"
    src.mkdir()
    for i in range(40):
        (src / f"doc{i:02d}.txt").write_text(f"Document {i} speaks of the river and the bridge {i}. " * 3, "utf-8")
    info = build_corpus(tmp_path / "corpus", inputs=[f"en={src}"], builtin=False)
    heldout = info.paths["en"]["heldout"].read_text("utf-8")
    train = info.paths["en"]["train"].read_text("utf-8")
    hay = corpus_haystack(tmp_path / "corpus", ["en"], tok.encode)
    text = tok.decode(hay.tokens.tolist())
    held_ids = set(re.findall(r"Document (\d+)", heldout))
    assert held_ids and set(re.findall(r"Document (\d+)", text)) == held_ids
    assert not held_ids & set(re.findall(r"Document (\d+)", train))
    with pytest.raises(ValueError, match="not in the corpus"):
        corpus_haystack(tmp_path / "corpus", ["ko"], tok.encode)
