"""kexa.data.jsonl: the one JSONL reader — places count blank lines, a bad line is one error naming file:line."""

import pytest

from kexa.data.jsonl import iter_jsonl
from kexa.data.prompts import PromptError, load_prompts
from kexa.tokenizer.textfiles import iter_documents


def test_rows_carry_their_place_and_blank_lines_still_count():
    assert list(iter_jsonl(['{"a": 1}', "", "  ", "[2]"], "f.jsonl")) == [("f.jsonl:1", {"a": 1}), ("f.jsonl:4", [2])]


def test_a_bad_line_raises_the_callers_error_or_is_kept():
    with pytest.raises(PromptError, match=r"^f\.jsonl:2: invalid JSON \(.* at column \d+\)$"):
        list(iter_jsonl(['{"a": 1}', '{"a": '], "f.jsonl", error=PromptError))
    rows = list(iter_jsonl(['{"a": ', "3"], "f.jsonl", keep_bad=True))
    assert rows[0][0] == "f.jsonl:1" and isinstance(rows[0][1], ValueError) and rows[1] == ("f.jsonl:2", 3)


def test_readers_name_the_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n\nnot json\n', "utf-8")
    with pytest.raises(PromptError, match=r"p\.jsonl:3: invalid JSON"):
        load_prompts(str(bad), "chat")
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"text": "a"}\n\nnot json\n', "utf-8")
    with pytest.raises(ValueError, match=r"d\.jsonl:3: not a JSON line"):
        list(iter_documents(docs))
