"""Corpus building: cleaning, troff, user folders, dedupe, deterministic splits, caching, built-ins."""

import json
import os
import unicodedata
from pathlib import Path

import pytest

from kexa.data import CorpusInfo, build_corpus
from kexa.data.corpus import LOCALE_DIR, clean, troff_to_text
from kexa.data.mathgen import problems
from kexa.tokenizer import InvalidUTF8Error


def test_clean_normalises_and_strips():
    text = "Cafe\u0301\r\nline\x07 two  \n\n\n\nend\t"
    out = clean(text)
    assert out == "Café\nline two\n\nend\n"
    assert unicodedata.is_normalized("NFC", out)


def test_troff_to_text():
    src = ('.\\" comment\n.TH LS 1\n.SH NAME\nls \\- list \\fBdirectory\\fR contents\n'
           '.SH DESCRIPTION\n.B ls\nlists \\(lqfiles\\(rq\\(em fast.\n.BR dir (1),\n.TP\n\\fB\\-a\\fR\nall\n')
    out = troff_to_text(src)
    assert "comment" not in out and ".TH" not in out
    assert "ls - list directory contents" in out
    assert "lists “files”— fast." in out and "dir(1)," in out and "-a\nall" in out


def _user_folder(root: Path) -> Path:
    d = root / "mine"
    d.mkdir()
    docs = [f"document number {i}: " + "some shared words here. " * 20 + f"unique tail {i * 7919}" for i in range(120)]
    (d / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[:80]), "utf-8")
    (d / "b.txt").write_text(docs[80], "utf-8")
    (d / "c.txt").write_text(docs[80], "utf-8")  # exact duplicate
    (d / "d.jsonl").write_text("".join(json.dumps({"text": unicodedata.normalize("NFD", "Café " + t)}) + "\n"
                                       for t in docs[81:]), "utf-8")
    return d


def test_user_corpus_dedupe_split_deterministic_and_cached(tmp_path):
    folder = _user_folder(tmp_path)
    info = build_corpus(tmp_path / "out", inputs=[f"custom={folder}"], builtin=False, heldout_fraction=0.2)
    assert info.domains == ["custom"]
    entry = info.manifest["domains"]["custom"]["files"]
    assert entry["train"]["documents"] + entry["heldout"]["documents"] == 120  # 121 files-docs, one duplicate
    assert entry["heldout"]["documents"] > 5
    train = info.paths["custom"]["train"].read_text("utf-8")
    assert unicodedata.is_normalized("NFC", train) and "Café" in train
    lines = [json.loads(l) for l in info.files("heldout", "jsonl")[0].read_text("utf-8").splitlines()]
    assert all(l["source"].startswith("user:") for l in lines)
    # same inputs -> reused as is; a fresh build is byte-identical (the split depends only on content)
    stamp = os.stat(info.paths["custom"]["train"]).st_mtime_ns
    again = build_corpus(tmp_path / "out", inputs=[f"custom={folder}"], builtin=False, heldout_fraction=0.2)
    assert os.stat(again.paths["custom"]["train"]).st_mtime_ns == stamp
    fresh = build_corpus(tmp_path / "out2", inputs=[f"custom={folder}"], builtin=False, heldout_fraction=0.2)
    for split in ("train", "heldout"):
        assert fresh.paths["custom"][split].read_bytes() == info.paths["custom"][split].read_bytes()
    assert CorpusInfo.load(tmp_path / "out").paths == info.paths


def test_user_corpus_errors(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_bytes(b"ok text\n\xff\xfe more\n")
    with pytest.raises(InvalidUTF8Error, match="x.txt: invalid UTF-8 at byte 8"):
        build_corpus(tmp_path / "o", inputs=[tmp_path / "bad"], builtin=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .txt, .jsonl or .parquet"):
        build_corpus(tmp_path / "o", inputs=[tmp_path / "empty"], builtin=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        (tmp_path / "pq").mkdir()
        (tmp_path / "pq" / "t.parquet").write_bytes(b"PAR1")
        with pytest.raises(ImportError, match="needs pyarrow"):
            build_corpus(tmp_path / "o", inputs=[tmp_path / "pq"], builtin=False)


def test_mathgen_is_deterministic_and_multilingual():
    a, b = list(problems(300, seed=1)), list(problems(300, seed=1))
    assert a == b and a != list(problems(300, seed=2))
    joined = "".join(a)
    assert "\\frac" in joined and "풀이" in joined and "Solution" in joined and "解答" in joined


@pytest.mark.skipif(not (LOCALE_DIR / "vi" / "LC_MESSAGES").is_dir(), reason="no Vietnamese catalogues here")
def test_builtin_domains_small(tmp_path):
    info = build_corpus(tmp_path, domains=["vi", "stem"], max_bytes_per_domain=60_000)
    assert set(info.domains) == {"vi", "stem"}
    vi = info.paths["vi"]["train"].read_text("utf-8")
    assert 40_000 < len(vi.encode()) <= 60_000 and any(c in vi for c in "ệếờ")
    stem = info.paths["stem"]["train"].read_text("utf-8")
    assert "\\frac" in stem or "\\sqrt" in stem
    assert info.manifest["domains"]["vi"]["sources"].keys() <= {"gettext", "man"}


def test_cli_data_corpus(tmp_path, capsys):
    from kexa.cli import main

    folder = _user_folder(tmp_path)
    assert main(["data", "corpus", "--out", str(tmp_path / "c"), "--no-builtin", "--input", str(folder), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(manifest["domains"]) == ["mine"]
    assert (tmp_path / "c" / "mine" / "train.txt").exists()


def test_tokenizer_stats_per_domain_of_a_corpus_folder(tmp_path, capsys):
    from kexa.cli import main

    folder = _user_folder(tmp_path)
    info = build_corpus(tmp_path / "c", inputs=[f"one={folder}", f"two={folder}"], builtin=False, heldout_fraction=0.2)
    from kexa.tokenizer.textfiles import expand

    assert expand([info.root]) == info.files("train")  # a corpus folder means its train split
    assert main(["tokenizer", "train", "--input", str(info.root), "--vocab-size", "520",
                 "--out", str(tmp_path / "tok")]) == 0
    capsys.readouterr()
    assert main(["tokenizer", "stats", "--tokenizer", str(tmp_path / "tok"), "--input", str(info.root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["inputs"]
    assert set(rows) == {"one", "two", "all"}
    assert rows["one"]["bytes_per_token"] > 1 and rows["all"]["tokens"] == rows["one"]["tokens"] + rows["two"]["tokens"]
