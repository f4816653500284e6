"""SuperBPE training, the Tokenizer wrapper and HF compatibility, on a tiny multilingual corpus."""

import json
import random
import time
import unicodedata

import pytest
import regex

from kexa.tokenizer import InvalidUTF8Error, Tokenizer, train_bpe, train_superbpe
from kexa.tokenizer.pretokenize import KEXAONE_STAGE2, RULES, SPACE, SUPERBPE_STAGE2, word_count
from kexa.tokenizer.superword import learn_merges
from kexa.tokenizer.train import count_chunks, segment_chunks, _stage1

from test_tokenizer_samples import ADVERSARIAL, SENTENCES, corpus

VOCAB = 1400


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text(corpus(), "utf-8")
    return path


@pytest.fixture(scope="module")
def heldout_text():
    return corpus(400, seed=1)


@pytest.fixture(scope="module")
def super_tok(corpus_file, tmp_path_factory):
    tok = train_superbpe([corpus_file], VOCAB, transition=0.6)
    out = tok.save_pretrained(tmp_path_factory.mktemp("super"))
    return Tokenizer.from_pretrained(out)


@pytest.fixture(scope="module")
def kexa_tok(corpus_file):
    return train_superbpe([corpus_file], VOCAB, transition=0.6, rule="kexaone")


@pytest.fixture(scope="module")
def bpe_tok(corpus_file):
    return train_bpe([corpus_file], VOCAB)


def test_special_token_ids_match_k_exaone(super_tok, bpe_tok):
    for tok in (super_tok, bpe_tok):
        assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 53)
        expected = {"<|system|>": 50, "<|user|>": 51, "<|assistant|>": 52, "<|endofturn|>": 53, "<think>": 54,
                    "</think>": 55, "<|tool_declare|>": 56, "<|tool|>": 57, "<tool>": 58, "</tool>": 59,
                    "<tool_call>": 60, "</tool_call>": 61, "<tool_result>": 62, "</tool_result>": 63}
        assert {k: tok.token_to_id(k) for k in expected} == expected
        # the learned vocabulary starts after the 128 reserved ids: no text ever encodes below 128
        assert min(tok.encode(corpus(50, seed=3))) >= 128
    assert super_tok.vocab_size == VOCAB
    assert bpe_tok.vocab_size <= VOCAB  # plain BPE runs out of pairs seen twice on this tiny corpus


def test_round_trip_adversarial(super_tok, kexa_tok, bpe_tok):
    for tok in (super_tok, kexa_tok, bpe_tok):
        for text in ADVERSARIAL:
            ids = tok.encode(text, allow_special=False)
            assert tok.decode(ids) == unicodedata.normalize("NFC", text), repr(text)
        assert tok.encode("") == [] and tok.decode([]) == ""


def test_nfd_input_is_normalised_to_nfc(super_tok):
    nfc = "Tiếng Việt, 한국어, café"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert super_tok.encode(nfd) == super_tok.encode(nfc)
    assert super_tok.decode(super_tok.encode(nfd)) == nfc


def test_special_strings_in_text(super_tok):
    text = "before <|endofturn|> after"
    assert 53 in super_tok.encode(text)
    plain = super_tok.encode(text, allow_special=False)
    assert 53 not in plain and super_tok.decode(plain) == text


def test_one_megabyte_string_round_trips_quickly(super_tok):
    text = corpus(200, seed=5) + "".join(ADVERSARIAL)
    text = (text * (1_000_000 // len(text.encode()) + 1))[:1_000_000]
    t = time.process_time()  # CPU time: the suite shares a loaded 2-core machine
    ids = super_tok.encode(text)
    assert super_tok.decode(ids) == unicodedata.normalize("NFC", text)
    assert time.process_time() - t < 15
    # one 1 MB "chunk" with no boundary at all (letters and single spaces only)
    words = " ".join(["alpha", "beta", "gamma"] * 60000)
    assert super_tok.decode(super_tok.encode(words)) == words


def test_invalid_utf8_is_a_clear_error_or_replaced(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(("hello world\n" * 50).encode() + b"caf\xe9 \xff\n" + ("more text\n" * 50).encode())
    with pytest.raises(InvalidUTF8Error, match=r"bad\.txt: invalid UTF-8 at byte 603"):
        train_bpe([bad], 500)
    tok = train_superbpe([bad], 500, errors="replace")
    assert tok.decode(tok.encode("caf\ufffd")) == "caf\ufffd"


def _superwords(tok):
    vocab = tok.hf.get_vocab()
    return [t for t, i in vocab.items() if i >= 128 and SPACE in t.lstrip(SPACE) and word_count(t) >= 2]


def test_superbpe_rule_superwords_exist_and_respect_constraints(super_tok, heldout_text):
    assert super_tok.meta["rule"] == "superbpe"
    supers = _superwords(super_tok)
    assert len(supers) > 20, supers
    vocab = super_tok.hf.get_vocab()
    for token, i in vocab.items():
        if i < 128:
            continue
        assert ":" + SPACE not in token, token
        assert word_count(token) <= 4, token
        if regex.search(r"\d", token):  # digits are isolated in groups of <= 3
            assert regex.fullmatch(r"\d{1,3}", token), token
    # every encoded token lies inside one chunk of SuperBPE's stage-2 regex
    _assert_tokens_inside_chunks(super_tok, heldout_text, SUPERBPE_STAGE2)


def test_kexaone_rule_superwords_are_letter_runs(kexa_tok, heldout_text):
    supers = _superwords(kexa_tok)
    assert len(supers) > 20
    letter_run = regex.compile(r"[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+")
    for token in supers:
        # a token may start or end inside a multi-byte letter: drop those partial bytes
        text = bytes(_BYTE_DECODER[c] for c in token).decode("utf-8", errors="replace").strip("\ufffd")
        # a superword may only join letter runs by single spaces: no digits, punctuation, newlines
        assert letter_run.fullmatch(text) or letter_run.fullmatch(text.rstrip(" ")), token
        assert "\n" not in text and "  " not in text and not regex.search(r"\p{N}", text), token
    _assert_tokens_inside_chunks(kexa_tok, heldout_text, KEXAONE_STAGE2)


def _byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_DECODER = _byte_decoder()


def _assert_tokens_inside_chunks(tok, text, pattern):
    text = unicodedata.normalize("NFC", text)
    cuts = {0, len(text)}
    for m in regex.finditer(pattern, text):  # Split(isolated): matches and the gaps between them
        cuts |= {m.start(), m.end()}
    bounds = sorted(cuts)
    enc = tok.hf.encode(text, add_special_tokens=False)
    import bisect

    crossing = []
    for (s, e), t in zip(enc.offsets, enc.tokens):
        k = bisect.bisect_right(bounds, s)
        if k < len(bounds) and bounds[k] < e:
            crossing.append((t, text[s:e]))
    assert not crossing, crossing[:5]


@pytest.mark.parametrize("weighted", [False, True])
def test_stage2_segmentation_equals_hf_encoding(corpus_file, weighted):
    """The exact stage-2 loop ends with the segmentation that the saved HF model reproduces, also when
    pairs are ranked by per-chunk weights (the language-balanced stage 2)."""
    rule = RULES["superbpe"]
    vocab, merges = _stage1([corpus_file], 700, rule.stage1, 2, "strict")
    counter = count_chunks([corpus_file], rule.stage2)
    chunks = [c for c in counter if len(c) > 1]
    segs = segment_chunks(chunks, vocab, merges)
    id_to_token = [None] * len(vocab)
    for t, i in vocab.items():
        id_to_token[i] = t
    rng = random.Random(0)
    weights = [counter[c] * rng.randint(1, 50) for c in chunks] if weighted else None
    pairs, final = learn_merges(segs, [counter[c] for c in chunks], id_to_token, 400, rule.allows,
                                return_segmentation=True, weights=weights)
    assert len(pairs) == 400
    merges = merges + [(id_to_token[a], id_to_token[b]) for a, b in pairs]
    for t in id_to_token[len(vocab):]:
        vocab[t] = len(vocab)
    hf_segs = segment_chunks(chunks, vocab, merges)
    mismatched = [c for c, a, b in zip(chunks, final, hf_segs) if a != b]
    assert not mismatched, mismatched[:3]


def test_learn_merges_semantics():
    toks = ["a", "b", "c", ":", "Ġ"]
    merges, segs = learn_merges([[0, 0, 0, 0], [0, 1, 2], [0, 1]], [1, 3, 1], toks, 10, min_frequency=1,
                                return_segmentation=True)
    assert merges[:2] == [(0, 1), (0, 0)]  # most frequent first; ties to the smaller pair
    assert segs[0] == [len(toks) - 1]  # a a a a -> aa aa -> aaaa (left to right)
    # a forbidden pair is skipped for good and the next best is taken
    toks = ["x", ":", "Ġ", "y"]
    merges = learn_merges([[0, 1, 2, 3]] * 1, [5], toks, 10, allows=RULES["superbpe"].allows)
    assert all(":Ġ" not in toks[a] + toks[b] for a, b in merges)
    assert (1, 2) not in merges and len(merges) >= 1


def test_superbpe_compresses_better_than_bpe(super_tok, bpe_tok, heldout_text):
    s, b = super_tok.stats([heldout_text]), bpe_tok.stats([heldout_text])
    assert s["bytes_per_token"] > 1.1 * b["bytes_per_token"], (s, b)


def test_hf_tokenizers_and_transformers_encode_identically(super_tok, kexa_tok, tmp_path):
    from tokenizers import Tokenizer as HF
    from transformers import AutoTokenizer

    sample = [s for sents in SENTENCES.values() for s in sents] + [a for a in ADVERSARIAL if "<|" not in a]
    sample.append(corpus(100, seed=7))
    for i, tok in enumerate((super_tok, kexa_tok)):
        folder = tok.save_pretrained(tmp_path / f"t{i}")
        hf = HF.from_file(str(folder / "tokenizer.json"))
        auto = AutoTokenizer.from_pretrained(str(folder))
        for text in sample:
            ids = tok.encode(text)
            assert hf.encode(text, add_special_tokens=False).ids == ids, text
            assert auto.encode(text, add_special_tokens=False) == ids, text
            assert auto.decode(ids) == tok.decode(ids)
        assert (auto.eos_token_id, auto.bos_token_id, auto.pad_token_id) == (53, 1, 0)


def test_loads_a_foreign_tokenizer_json_unchanged(tmp_path):
    from tokenizers import Tokenizer as HF, models, pre_tokenizers, trainers

    hf = HF(models.BPE(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator([corpus(200)], trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]", "</s>"]))
    hf.save(str(tmp_path / "tokenizer.json"))
    original = json.loads((tmp_path / "tokenizer.json").read_text())
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.encode("the quick fox") == hf.encode("the quick fox").ids
    assert tok.bos_id is None and tok.vocab_size == hf.get_vocab_size()
    tok.save_pretrained(tmp_path / "copy")
    assert json.loads((tmp_path / "copy" / "tokenizer.json").read_text()) == original


def test_cli_train_stats_encode_decode(tmp_path, corpus_file, capsys):
    from kexa.cli import main

    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--input", str(corpus_file), "--vocab-size", "700", "--out", str(out),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["algorithm"] == "superbpe" and summary["vocab_size"] == 700
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / f).exists()
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert main(["tokenizer", "train", "--input", str(corpus_file), "--vocab-size", "700", "--out",
                 str(tmp_path / "plain"), "--plain", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["algorithm"] == "bpe"
    assert main(["tokenizer", "stats", "--tokenizer", str(out), "--input", str(corpus_file), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["inputs"]["train.txt"]["bytes_per_token"] > 2
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--text", "안녕 world"]) == 0
    ids = capsys.readouterr().out.split()
    assert main(["tokenizer", "decode", "--tokenizer", str(out), "--ids", *ids]) == 0
    assert capsys.readouterr().out == "안녕 world\n"


def test_stage1_regex_handles_scripts_digits_and_line_breaks():
    from tokenizers import pre_tokenizers, Regex

    split = pre_tokenizers.Split(Regex(RULES["superbpe"].stage1), behavior="isolated")

    def pieces(text):
        return [p for p, _ in split.pre_tokenize_str(text)]

    assert pieces("한국의 수도는 서울") == ["한국의", " 수도는", " 서울"]
    assert pieces("日本語のテキストとコーヒー。") == ["日本語", "の", "テキスト", "と", "コーヒー", "。"]
    nfd = unicodedata.normalize("NFD", "Tiếng Việt")  # marks stay with their letters even unnormalised
    assert pieces(nfd) == [nfd[:nfd.index(" ")], nfd[nfd.index(" "):]]
    assert pieces("x=12345") == ["x", "=", "123", "45"]
    assert pieces("end.\n\n  next") == ["end", ".\n\n", " ", " next"]
    assert pieces("don't") == ["don", "'t"]
