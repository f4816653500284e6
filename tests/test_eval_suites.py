"""Scorers of the evaluation suites, without a model: MCQ letter extraction edge cases, math-verify
equivalences, IFEval-style checkers, MRCR grading, chrF/BLEU equal to sacrebleu's own command line, HumanEval
completions through the sandbox, and the translation held-out set kept out of the corpus."""

import random
import subprocess
import sys
from pathlib import Path

import pytest

from kexa.client import Reply
from kexa.eval.suites import build_suite
from kexa.eval.suites.ifeval import INSTRUCTIONS, check, loose_variants, pick_instructions
from kexa.eval.suites.math import Math, final_math_answer, gold_answer, last_boxed
from kexa.eval.suites.mcq import extract_letter
from kexa.eval.suites.mrcr import grade


@pytest.mark.parametrize("text, n, want", [
    ("Let me think. A is wrong because...\nAnswer: B", 4, "B"),
    ("**Answer:** (C)", 4, "C"),
    ("The answer is D.", 4, "D"),
    ("Answer: A\nWait, no.\nAnswer: C", 4, "C"),           # the last labelled answer wins
    ("정답: B", 4, "B"),
    ("정답은 C입니다", 4, "C"),
    ("答え：Ｄ", 4, "D"),                                    # full-width letter and colon (NFKC)
    ("Respuesta: A", 4, "A"),
    ("Antwort: B", 4, "B"),
    ("Đáp án: C", 4, "C"),
    ("$\\boxed{B}$", 4, "B"),
    ("(B)", 4, "B"),
    ("C.", 4, "C"),
    ("A cat sat on the mat.", 4, None),                    # a bare letter in prose is no answer
    ("The answer is a number we cannot know", 4, None),    # lower-case article, not a letter
    ("Answer: E", 4, None),                                # out of range for four choices
    ("Answer: E", 5, "E"),
    ("", 4, None),
    ("I think it's B or C", 4, None),
])
def test_mcq_extraction(text, n, want):
    assert extract_letter(text, n) == want


@pytest.mark.parametrize("gold, reply, ok", [
    ("42", "so the total is \\boxed{42}", True),
    ("1234", "The answer is $1,234$.", True),
    ("0.5", "\\boxed{\\frac{1}{2}}", True),
    ("\\frac{1}{2}", "$0.5$", True),
    ("14/33", "\\boxed{\\dfrac{14}{33}}", True),
    ("-57/3", "x = \\boxed{-19}", True),
    ("42", "\\boxed{43}", False),
    ("42", "The answer is 42, wait \\boxed{41}", False),    # the boxed answer is the final one
    ("3", "", False),
])
def test_math_verify_equivalences(gold, reply, ok):
    suite = Math.__new__(Math)
    (scores,) = suite.score([{"gold": gold}], [Reply(content=reply)])
    assert scores["accuracy"] == float(ok)


def test_math_formats():
    assert gold_answer({"question": "q", "answer": "work...\n#### 1,200"}, "x") == ("q", "1200")
    assert gold_answer({"problem": "p", "solution": "so \\boxed{\\frac{a}{b^{2}}}."}, "x") == ("p", "\\frac{a}{b^{2}}")
    assert last_boxed("\\boxed{1} then \\boxed{{2}+1}") == "{2}+1"
    assert final_math_answer("no box 7") == "no box 7"
    with pytest.raises(ValueError, match="boxed"):
        gold_answer({"problem": "p", "solution": "no answer"}, "f.jsonl:3")


def test_math_and_mcq_data_files(tmp_path):
    f = tmp_path / "gsm.jsonl"
    f.write_text('{"question": "2+2?", "answer": "#### 4"}\n{"question": "3+3?", "answer": "#### 6"}\n')
    items = build_suite("math", data=str(f)).items(None)
    assert [it["gold"] for it in items] == ["4", "6"] and "\\boxed{}" in items[0]["messages"][0]["content"]
    m = tmp_path / "mmlu.jsonl"
    m.write_text('{"question": "Q?", "choices": ["x", "y", "z", "w"], "answer": "C"}\n')
    (it,) = build_suite("mcq", data=str(m)).items(None)
    assert it["answer"] == 2 and "C) z" in it["messages"][0]["content"]
    m.write_text('{"question": "Q?", "choices": ["x", "y"], "answer": 5}\n')
    with pytest.raises(ValueError, match="not a choice"):
        build_suite("mcq", data=str(m))
    m.write_text('{"question": "Q?"\n')
    with pytest.raises(ValueError, match="mmlu.jsonl:1: not JSON"):
        build_suite("mcq", data=str(m))


def test_generated_mcq_is_answerable_and_balanced():
    items = build_suite("mcq").items(None)
    assert len(items) == 4 * 6 * 8 and len({it["id"] for it in items}) == len(items)
    for it in items:
        assert len(set(it["choices"])) == 4
    positions = [it["answer"] for it in items]
    assert all(positions.count(k) > len(items) / 8 for k in range(4))  # shuffled, not always the same letter
    assert {it["subject"].split("/")[1] for it in items[:24]} == {"ko", "en", "es", "de", "ja", "vi"}  # interleaved


@pytest.mark.parametrize("iid, kwargs, good, bad", [
    ("keywords:existence", {"keywords": ["river", "music"]}, "Music by the river.", "Music only."),
    ("keywords:forbidden_words", {"forbidden_words": ["river"]}, "A lake.", "The River flows."),
    ("keywords:frequency", {"keyword": "bee", "frequency": 2, "relation": "at least"}, "bee bee", "bee beetle"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "zoo", "zz"),
    ("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "two words", "one two three"),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"}, "Hi. Bye!", "Hi there"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\nTwo.", "One.\n\nTwo."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b", "* a\n* b\n* c"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:title", {}, "<<Joy>>\ntext", "Joy\ntext"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and *b*", "*a* only"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nx\nSection 2\ny", "Section 1\nx"),
    ("change_case:english_lowercase", {}, "all lower", "Not lower"),
    ("change_case:english_capital", {}, "ALL CAPS", "Mostly CAPS"),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "NO WAY", "NO way"),
    ("punctuation:no_comma", {}, "no comma here", "a, b"),
    ("startend:end_checker", {"end_phrase": "That is all."}, "Done. That is all.", "That is all. Done."),
    ("startend:quotation", {}, '"quoted"', 'not "quoted"'),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", "Hi. bye"),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [address]", "[name]"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Add 2 and 3."}, "Add 2 and 3. It is 5.", "It is 5."),
    ("combination:two_responses", {}, "Yes.\n******\nNo.", "Yes. No."),
])
def test_ifeval_checkers(iid, kwargs, good, bad):
    assert check(iid, good, kwargs) and not check(iid, bad, kwargs)
    assert not check(iid, "   ", kwargs)  # an empty reply follows nothing


def test_ifeval_items_loose_and_conflicts():
    rng = random.Random(0)
    for _ in range(300):
        chosen = pick_instructions(rng, "base")
        groups = [INSTRUCTIONS[i][0] for i, _ in chosen]
        assert len(set(groups)) == len(groups) and ("whole" not in groups or len(groups) == 1)
    assert len(INSTRUCTIONS) >= 20
    # loose accepts a reply whose first line is chatter; strict does not
    assert any(check("startend:quotation", v, {}) for v in loose_variants('Sure:\n"quoted"'))
    assert not check("startend:quotation", 'Sure:\n"quoted"', {})
    suite = build_suite("ifeval", n=12)
    items = suite.items(None)
    assert len(items) == 12 and all(it["instruction_id_list"] for it in items)
    scores = suite.score(items, [Reply(content="") for _ in items])
    assert all(s["prompt_strict"] == 0.0 for s in scores)


def test_mrcr_grade_and_items():
    assert grade("abcXYZ hello", "abcXYZ hello", "abcXYZ") == 1.0
    assert grade("hello", "abcXYZ hello", "abcXYZ") == 0.0
    assert 0.3 < grade("abcXYZ hellp world", "abcXYZ hello", "abcXYZ") < 1.0
    suite = build_suite("mrcr", n=6, turns=10, needles=3)
    items = suite.items(None)
    for it in items:
        msgs = it["messages"]
        assert len(msgs) == 2 * 10 + 1 and msgs[-1]["content"].startswith(f"Prepend {it['prefix']}")
        replies = [m["content"] for m in msgs if m["role"] == "assistant"]
        assert it["target"][len(it["prefix"]):] in replies  # the target is one of the conversation's replies
        (s,) = suite.score([it], [Reply(content=it["target"])])
        assert s["score"] == 1.0
    with pytest.raises(ValueError, match="needles"):
        build_suite("mrcr", turns=2, needles=3)


def test_translation_metrics_equal_sacrebleu_cli(tmp_path):
    suite = build_suite("translation", directions="en-ko,en-de,ko-en", per_direction=6)
    items = suite.items(None)
    assert {it["direction"] for it in items} == {"en-ko", "en-de", "ko-en"} and len(items) == 18
    rng = random.Random(0)
    # hypotheses: the reference, a damaged copy, or something else, so the scores are neither 0 nor 100
    hyps = [it["reference"] if i % 3 == 0 else it["reference"][: len(it["reference"]) // 2] if i % 3 == 1
            else items[rng.randrange(len(items))]["reference"] for i, it in enumerate(items)]
    scores = suite.score(items, [Reply(content=h) for h in hyps])
    records = [{"item": it, "scores": s} for it, s in zip(items, scores)]
    metrics = suite.summarize(records, tmp_path, "plain")
    for d in ("en-ko", "en-de", "ko-en"):
        hyp, ref = tmp_path / "translation" / f"plain.{d}.hyp", tmp_path / "translation" / f"plain.{d}.ref"
        tokenize = "char" if d.endswith(("ko", "ja")) else "13a"
        out = subprocess.run([sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "chrf",
                              "--tokenize", tokenize, "-b", "-f", "text", "-w", "4"], capture_output=True, text=True, check=True).stdout.split()
        assert float(out[0]) == pytest.approx(metrics[f"bleu/{d}"], abs=1e-4)
        assert float(out[1]) == pytest.approx(metrics[f"chrf/{d}"], abs=1e-4)
        assert 0 < metrics[f"chrf/{d}"] < 100
    with pytest.raises(ValueError, match="directions"):
        build_suite("translation", directions="ko-ja")


def test_translation_heldout_never_in_corpus_documents():
    from kexa.data.corpus import gettext_documents
    from kexa.eval.suites.translation import heldout_pairs
    pairs = heldout_pairs("ko")
    assert len(pairs) >= 50
    held_en, held_ko = {en for en, _ in pairs}, {ko for _, ko in pairs}
    ko_lines = {line for _, doc in gettext_documents("ko") for line in doc.split("\n")}
    en_lines = {line for _, doc in gettext_documents("ko", english=True) for line in doc.split("\n")}
    assert not held_ko & ko_lines and not held_en & en_lines


def test_code_suite_scores_canonical_and_wrong_answers():
    suite = build_suite("code", samples=1, ks="1")
    items = suite.items(3)
    fences = "```"
    good = [Reply(content=f"Here:\n{fences}python\n{suite.problems[it['task_id']]['prompt']}"
                          f"{suite.problems[it['task_id']]['canonical_solution']}{fences}") for it in items]
    body_only = [Reply(content=f"{fences}python\n{suite.problems[it['task_id']]['canonical_solution']}{fences}")
                 for it in items]
    wrong = [Reply(content=f"{fences}python\ndef {suite.problems[it['task_id']]['entry_point']}(*a):\n    return None\n"
                           f"{fences}") for it in items]
    for replies, want in ((good, 1.0), (body_only, 1.0), (wrong, 0.0)):
        scores = suite.score(items, replies)
        records = [{"item": it, "scores": s} for it, s in zip(items, scores)]
        assert suite.summarize(records, Path("."), "plain")["pass@1"] == want
