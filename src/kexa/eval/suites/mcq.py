"""Multiple choice: a generated answer letter (`mcq`) or the log-likelihood of each letter (`mcq-loglik`).

Data: `data=FILE`, MMLU-style JSONL — {"question", "choices": [...], "answer": 0-based index or letter}
(optional "subject", "id") — or, without a file, a Korean + multilingual set generated from `kexa.tasks`
held-out problems (arith, word problems, lookup, sorting; six languages): the reference answer plus three
distinct wrong answers from the task's own `corrupt`, shuffled. No licensed MCQ data ships offline
(KMMLU, CLIcK, MMLU are hub datasets); bring them as JSONL.

Prompt: the zero-shot chain-of-thought multiple-choice template of OpenAI simple-evals ("... The last line
of your response should be of the following format: 'Answer: $LETTER' ..."), which is the shape of the
template the K-EXAONE report publishes; the report's exact wording is not in our reference notes. The letter
is read from the answer after `</think>` by `extract_letter` (edge cases in tests/test_eval_suites.py).
`mcq-loglik` asks `Question: ...\\nA. ...\\nAnswer:` and picks the letter (" A", " B", ...) with the highest
log-likelihood, like lm-eval's MMLU for base models.
"""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

from .base import Suite, read_jsonl, take

LETTERS = "ABCDEFGHIJ"
TEMPLATE = ("Answer the following multiple choice question. The last line of your response should be of the "
            "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of {letters}. Think step "
            "by step before answering.\n\n{question}\n\n{options}")
GENERATED_TASKS = ("arith", "word", "lookup", "sorting")

# "Answer: B", "answer is (B)", "정답: B", "答え：B", "Respuesta: B", "Antwort: B", "Đáp án: B", "\boxed{B}"
_ANSWER_WORDS = r"(?:final\s+answer|answer|정답|답|答え|答|respuesta(?:\s+correcta)?|antwort|đáp\s+án|réponse)"
_LABELLED = re.compile(rf"{_ANSWER_WORDS}\s*(?:is|는|은|:|：|=|es|ist|là)?\s*[:：]?\s*[*_(\[【「]*\s*((?-i:[A-J]))(?![A-Za-z0-9'])",
                       re.I)
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*([A-J])\s*\}?\s*\}")
_ALONE = re.compile(r"^[\s*_(\[]*([A-J])[\s*_)\].:]*$")


def extract_letter(text: str, n_choices: int = 4) -> str | None:
    """The chosen letter of a reply, or None. Order: the last labelled answer ("Answer: X" in six languages,
    markdown allowed), then the last \\boxed{X}, then a reply that is only a letter ("(B)", "C."). A letter
    outside the first `n_choices` counts as no answer. A bare letter inside prose ("A cat ...") is never
    taken: that guess would reward noise."""
    text = unicodedata.normalize("NFKC", text or "").replace("**", "")
    valid = LETTERS[:n_choices]
    for pattern in (_LABELLED, _BOXED):
        found = pattern.findall(text)
        if found:
            letter = found[-1].upper()
            return letter if letter in valid else None
    m = _ALONE.match(text.strip())
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    return None


def _answer_index(row: dict, path: str, n: int) -> int:
    a = row["answer"]
    if isinstance(a, str) and len(a.strip()) == 1 and a.strip().upper() in LETTERS:
        a = LETTERS.index(a.strip().upper())
    if not isinstance(a, int) or not 0 <= a < n:
        raise ValueError(f"{path}: row {row.get('id', '?')}: answer {row['answer']!r} is not a choice index or letter "
                         f"among {n} choices")
    return a


def generated_items(per_cell: int = 8, seed: int = 0) -> list[dict]:
    """Four-way MCQ from kexa.tasks held-out problems: task x language, `per_cell` each."""
    import kexa.tasks
    out = []
    for name in GENERATED_TASKS:
        task = kexa.tasks.get(name)
        for lang in kexa.tasks.LANGS:
            rng = random.Random(f"mcq:{seed}:{name}:{lang}")
            made = 0
            while made < per_cell:
                ex = task.sample(rng, lang=lang, split="heldout")
                wrong: list[str] = []
                for _ in range(50):
                    w = task.corrupt(ex, rng)
                    if w != ex.answer and w not in wrong:
                        wrong.append(w)
                    if len(wrong) == 3:
                        break
                if len(wrong) < 3:
                    continue
                choices = wrong + [ex.answer]
                rng.shuffle(choices)
                out.append({"id": f"{name}-{lang}-{made}", "subject": f"{name}/{lang}", "question":
                            ex.messages[-1]["content"], "choices": choices, "answer": choices.index(ex.answer)})
                made += 1
    return sorted(out, key=lambda r: int(r["id"].rsplit("-", 1)[1]))  # interleaved: a --limit covers every cell


class MCQ(Suite):
    name = "mcq"
    max_tokens = 2048

    def __init__(self, data: str | None = None, per_cell: int = 8, seed: int = 0):
        self.data, self.per_cell, self.seed = data, int(per_cell), int(seed)
        self._rows = self._load()

    def _load(self) -> list[dict]:
        if self.data is None:
            return generated_items(self.per_cell, self.seed)
        rows = read_jsonl(self.data, ("question", "choices", "answer"))
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row["choices"], list) or not 2 <= len(row["choices"]) <= len(LETTERS):
                raise ValueError(f"{self.data}: row {i + 1}: 'choices' must be a list of 2..{len(LETTERS)} options")
            out.append({"id": str(row.get("id", i)), "subject": row.get("subject", ""), "question": row["question"],
                        "choices": [str(c) for c in row["choices"]],
                        "answer": _answer_index(row, self.data, len(row["choices"]))})
        return out

    def settings(self) -> dict:
        return {"data": self.data or f"generated from kexa.tasks held-out ({', '.join(GENERATED_TASKS)})",
                "template": "simple-evals multichoice (zero-shot CoT)"}

    @staticmethod
    def prompt(row: dict) -> str:
        options = "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(row["choices"]))
        return TEMPLATE.format(letters=LETTERS[:len(row["choices"])], question=row["question"], options=options)

    def items(self, limit):
        return [{**row, "messages": [{"role": "user", "content": self.prompt(row)}]} for row in take(self._rows, limit)]

    def score(self, items, replies):
        out = []
        for it, r in zip(items, replies):
            letter = extract_letter(r.content, len(it["choices"]))
            out.append({"accuracy": float(letter == LETTERS[it["answer"]]), "extracted": letter,
                        "answered": float(letter is not None)})
        return out

    def summarize(self, records, out_dir: Path, mode: str) -> dict:
        metrics = super().summarize(records, out_dir, mode)
        by_subject: dict[str, list[float]] = {}
        for r in records:
            by_subject.setdefault(r["item"].get("subject") or "all", []).append(r["scores"]["accuracy"])
        if len(by_subject) > 1:
            metrics.update({f"accuracy/{s}": sum(v) / len(v) for s, v in sorted(by_subject.items())})
        return metrics


class MCQLoglik(MCQ):
    """The same data scored by log-likelihood of each answer letter after `Answer:` (base models)."""
    name = "mcq-loglik"
    kind = "loglikelihood"

    def items(self, limit):
        out = []
        for row in take(self._rows, limit):
            options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"]))
            context = f"Question: {row['question']}\n{options}\nAnswer:"
            out.append({**row, "pairs": [[context, f" {LETTERS[i]}"] for i in range(len(row["choices"]))]})
        return out

    def score(self, items, replies):
        import json
        out = []
        for it, r in zip(items, replies):
            scored = json.loads(r.content)  # [(logprob, greedy)] per choice
            best = max(range(len(scored)), key=lambda i: scored[i][0])
            out.append({"accuracy": float(best == it["answer"]), "extracted": LETTERS[best]})
        return out

    def settings(self) -> dict:
        return {**super().settings(), "template": "Question/choices/Answer: + letter log-likelihood (lm-eval MMLU)"}
