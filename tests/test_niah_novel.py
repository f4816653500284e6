"""NIAH's out-of-template needle and Wilson intervals: the novel needle shares no phrasing with the
training templates, a retriever that only knows the trained template fails it while a real
retriever does not, and every accuracy carries its 95% Wilson interval."""

import re
import types

import numpy as np
import pytest

from kexa.data.synthetic import TEMPLATES, Filler, generated_filler_text
from kexa.eval.niah import NOVEL_TEMPLATES, NiahConfig, evaluate_niah, wilson_interval

TOK = types.SimpleNamespace(encode=lambda s: list(s.encode("utf-8")), decode=lambda ids: bytes(ids).decode("utf-8"))
HAYSTACK = Filler(np.asarray(TOK.encode(generated_filler_text(300))))


def test_wilson_interval_values():
    assert wilson_interval(9, 10) == pytest.approx((0.5958, 0.9821), abs=1e-4)
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(50, 50)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.9287, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # more cases, narrower interval at the same rate
    assert np.diff(wilson_interval(45, 50)) < np.diff(wilson_interval(9, 10))


def words(template: str) -> list[str]:
    return re.findall(r"\w+", template.replace("{key}", " ").replace("{other}", " ").lower())


def test_novel_needle_shares_no_phrase_with_any_training_template():
    """No word pair (ko/ja: no 3-character run) of the novel needle's sentence or question occurs in
    any training template of its language, except the interrogative ending of a ko/ja question
    ("무엇" / "何で": the only way to ask "what")."""
    assert set(NOVEL_TEMPLATES) == set(TEMPLATES)
    interrogative = {"는 무", " 무엇", "は何で"}
    for lang, novel in NOVEL_TEMPLATES.items():
        trained = list(TEMPLATES[lang].values())
        for field in ("prefix", "question"):
            if lang in ("ko", "ja"):
                text = novel[field].replace("{key}", "")
                shared = {text[i:i + 3] for i in range(len(text) - 2) if any(text[i:i + 3] in t for t in trained)}
                assert shared <= (interrogative if field == "question" else set()), (lang, field, shared)
            else:
                pairs = {p for t in trained for w in [words(t)] for p in zip(w, w[1:])}
                w = words(novel[field])
                assert not set(zip(w, w[1:])) & pairs, (lang, field, set(zip(w, w[1:])) & pairs)


def reader(templates):
    """A stub retriever that finds "<prefix(key)> <digits>" for the asked key, in the given templates only."""
    def retrieve(prompts, n):
        out = []
        for p in prompts:
            text = TOK.decode(p)
            answer = " 0000"
            for t in templates.values():
                pat = re.escape(t["prefix"]).replace(re.escape("{key}"), r"(\w+)") + r" (\d+)"
                asked = re.search(re.escape(t["prefix"]).replace(re.escape("{key}"), r"(\w+)") + r"$", text)
                for m in re.finditer(pat, text):
                    if asked and m.group(1) == asked.group(1):
                        answer = " " + m.group(2)
            out.append(TOK.encode(answer + ".")[:n])
        return out
    return retrieve


def run(retrieve, needle):
    config = NiahConfig(lengths=[400, 700], depths=[0.0, 0.5, 1.0], samples=4, languages=sorted(TEMPLATES),
                        needle=needle)
    return evaluate_niah(retrieve, TOK, config, HAYSTACK)


def test_novel_needle_separates_retrieval_from_template_matching():
    template_only = reader(TEMPLATES)  # "knows" only the trained phrasing
    real = reader({**{f"t{k}": v for k, v in TEMPLATES.items()}, **{f"n{k}": v for k, v in NOVEL_TEMPLATES.items()}})
    on_template = run(template_only, "template")
    on_novel = run(template_only, "novel")
    real_novel = run(real, "novel")
    assert on_template["mean_accuracy"] == 1.0 and on_template["task"] == "niah_single"
    assert on_novel["mean_accuracy"] == 0.0 and on_novel["task"] == "niah_single_novel"
    assert real_novel["mean_accuracy"] == 1.0
    # the novel prompt really holds the novel fact and ends with the novel answer prefix
    case = real_novel["cells"][0]["cases"][0]
    assert real_novel["cases_per_length"] == 12 and real_novel["cases_per_cell"] == 4
    assert real_novel["config"]["needle"] == "novel"
    # intervals: per length over its 12 cases, per cell over its 4
    assert real_novel["interval"]["400"] == pytest.approx(list(wilson_interval(12, 12)))
    assert on_novel["interval"]["700"] == pytest.approx(list(wilson_interval(0, 12)))
    assert all(c["interval"] == pytest.approx(list(wilson_interval(4, 4))) for c in real_novel["cells"])
    assert case["correct"] and case["lang"] in NOVEL_TEMPLATES


def test_bad_needle_is_rejected():
    with pytest.raises(ValueError, match="needle must be one of"):
        NiahConfig(lengths=[128], needle="other")
