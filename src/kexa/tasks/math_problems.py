"""`math`: worked school-math problems from `kexa.data.mathgen` (the pre-training corpus's generator),
asked as questions with a single final answer, checked by math-verify.

Tiers: 1 linear equations and fraction arithmetic; 2 sums of series and dice probabilities;
3 definite integrals of polynomials. The reasoning trace is mathgen's worked solution (the same text
the corpus teaches in pre-training; it is language-neutral notation with English connectives), the
question is mathgen's phrasing in the language, framed by one of several native instructions.
Problem identity: the kind and the worked solution (identical across languages).
"""

from __future__ import annotations

import random

from kexa.data import mathgen

from .base import Example, Task, pick, user
from .verify import math_equal

KINDS = {1: (mathgen.linear, mathgen.fractions_), 2: (mathgen.series, mathgen.probability), 3: (mathgen.integral,)}

FRAMES = {
    "en": ["{q}", "Solve the following problem. {q}", "{q} Give the final answer.", "Math question: {q}"],
    "ko": ["{q}", "다음 문제를 푸세요. {q}", "{q} 최종 답을 쓰세요.", "수학 문제: {q}"],
    "es": ["{q}", "Resuelve el siguiente problema. {q}", "{q} Da la respuesta final.", "Pregunta de matemáticas: {q}"],
    "de": ["{q}", "Löse die folgende Aufgabe. {q}", "{q} Gib das Endergebnis an.", "Matheaufgabe: {q}"],
    "ja": ["{q}", "次の問題を解いてください。{q}", "{q} 最終的な答えを書いてください。", "数学の問題：{q}"],
    "vi": ["{q}", "Hãy giải bài toán sau. {q}", "{q} Hãy cho đáp số cuối cùng.", "Bài toán: {q}"],
}


class MathProblems(Task):
    name = "math"
    tiers = (1, 2, 3)

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        kind = rng.choice(KINDS[tier])
        question, solution, answer = kind(rng, mathgen.PHRASES[lang])
        text = pick(rng, FRAMES, lang, q=question)
        return Example(user(text), answer, solution, {"key": f"math:{kind.__name__}:{solution}", "kind": kind.__name__})

    def score(self, example: Example, content: str, reply) -> float:
        return float(math_equal(example.answer, content))
