"""`arith`: multi-digit arithmetic with carries and borrows, with column-by-column reasoning traces.

Tiers: 1 two-digit + two-digit with a carry out of the ones column (the speedrun's target skill);
2 three/four-digit addition with carries or subtraction with borrows; 3 five- to eight-digit
addition/subtraction; 4 multiplication (2–3 digits × 1–2 digits) by partial products.
The answer is the bare number, checked with math-verify. Problem identity: the operation and its
operands (sorted for + and ×, which commute: 38 + 57 is the same problem as 57 + 38).

    python -c "import random, kexa.tasks as T; print(T.get('arith').sample(random.Random(0), lang='ko'))"
"""

from __future__ import annotations

import random

from .base import Example, Task, pick, user
from .lang import NUMBER_ONLY, josa
from .verify import math_equal

PHRASINGS = {
    "+": {
        "en": [
            "What is {a} + {b}?",
            "Compute {a} + {b}.",
            "{a} + {b} = ?",
            "Add {a} and {b}.",
            "What do you get when you add {a} to {b}?",
            "Calculate the sum of {a} and {b}.",
            "Find {a} plus {b}.",
            "How much is {a} plus {b}?",
        ],
        "ko": [
            "{a} + {b_neun} 얼마인가요?",
            "{a} + {b_reul} 계산하세요.",
            "{a} + {b} = ?",
            "{a_wa} {b_reul} 더하면 얼마예요?",
            "{a} 더하기 {b_neun}?",
            "{a_wa} {b}의 합을 구하시오.",
            "{a}에 {b_reul} 더한 값은 무엇인가요?",
            "{a} 더하기 {b}, 답은?",
        ],
        "es": [
            "¿Cuánto es {a} + {b}?",
            "Calcula {a} + {b}.",
            "{a} + {b} = ?",
            "Suma {a} y {b}.",
            "¿Cuánto da {a} más {b}?",
            "Halla la suma de {a} y {b}.",
            "Si sumas {a} y {b}, ¿qué obtienes?",
        ],
        "de": [
            "Was ist {a} + {b}?",
            "Berechne {a} + {b}.",
            "{a} + {b} = ?",
            "Addiere {a} und {b}.",
            "Wie viel ist {a} plus {b}?",
            "Bestimme die Summe von {a} und {b}.",
            "Was ergibt {a} plus {b}?",
        ],
        "ja": [
            "{a} + {b} はいくつですか？",
            "{a} + {b} を計算してください。",
            "{a} + {b} = ?",
            "{a}と{b}を足すといくつですか。",
            "{a}たす{b}は？",
            "{a}と{b}の和を求めなさい。",
            "{a}に{b}を加えるといくつになりますか？",
        ],
        "vi": [
            "{a} + {b} bằng bao nhiêu?",
            "Tính {a} + {b}.",
            "{a} + {b} = ?",
            "Cộng {a} với {b}.",
            "{a} cộng {b} được bao nhiêu?",
            "Tìm tổng của {a} và {b}.",
            "Hãy tính tổng {a} và {b}.",
        ],
    },
    "-": {
        "en": [
            "What is {a} - {b}?",
            "Compute {a} - {b}.",
            "{a} - {b} = ?",
            "Subtract {b} from {a}.",
            "What is {a} minus {b}?",
            "Find the difference {a} - {b}.",
            "How much is left if you take {b} from {a}?",
        ],
        "ko": [
            "{a} - {b_neun} 얼마인가요?",
            "{a} - {b_reul} 계산하세요.",
            "{a} - {b} = ?",
            "{a}에서 {b_reul} 빼면 얼마예요?",
            "{a} 빼기 {b_neun}?",
            "{a}에서 {b_reul} 뺀 값을 구하시오.",
        ],
        "es": [
            "¿Cuánto es {a} - {b}?",
            "Calcula {a} - {b}.",
            "{a} - {b} = ?",
            "Resta {b} de {a}.",
            "¿Cuánto da {a} menos {b}?",
            "Halla la diferencia {a} - {b}.",
        ],
        "de": [
            "Was ist {a} - {b}?",
            "Berechne {a} - {b}.",
            "{a} - {b} = ?",
            "Subtrahiere {b} von {a}.",
            "Wie viel ist {a} minus {b}?",
            "Was bleibt, wenn man {b} von {a} abzieht?",
        ],
        "ja": [
            "{a} - {b} はいくつですか？",
            "{a} - {b} を計算してください。",
            "{a} - {b} = ?",
            "{a}から{b}を引くといくつですか。",
            "{a}ひく{b}は？",
            "{a}と{b}の差を求めなさい。",
        ],
        "vi": [
            "{a} - {b} bằng bao nhiêu?",
            "Tính {a} - {b}.",
            "{a} - {b} = ?",
            "Lấy {a} trừ {b}.",
            "{a} trừ {b} còn bao nhiêu?",
            "Tìm hiệu của {a} và {b}.",
        ],
    },
    "*": {
        "en": [
            "What is {a} × {b}?",
            "Compute {a} * {b}.",
            "{a} × {b} = ?",
            "Multiply {a} by {b}.",
            "What is {a} times {b}?",
            "Find the product of {a} and {b}.",
        ],
        "ko": [
            "{a} × {b_neun} 얼마인가요?",
            "{a} * {b_reul} 계산하세요.",
            "{a} × {b} = ?",
            "{a}에 {b_reul} 곱하면 얼마예요?",
            "{a} 곱하기 {b_neun}?",
            "{a_wa} {b}의 곱을 구하시오.",
        ],
        "es": [
            "¿Cuánto es {a} × {b}?",
            "Calcula {a} * {b}.",
            "{a} × {b} = ?",
            "Multiplica {a} por {b}.",
            "¿Cuánto da {a} por {b}?",
            "Halla el producto de {a} y {b}.",
        ],
        "de": [
            "Was ist {a} × {b}?",
            "Berechne {a} * {b}.",
            "{a} × {b} = ?",
            "Multipliziere {a} mit {b}.",
            "Wie viel ist {a} mal {b}?",
            "Bestimme das Produkt von {a} und {b}.",
        ],
        "ja": [
            "{a} × {b} はいくつですか？",
            "{a} * {b} を計算してください。",
            "{a} × {b} = ?",
            "{a}に{b}を掛けるといくつですか。",
            "{a}かける{b}は？",
            "{a}と{b}の積を求めなさい。",
        ],
        "vi": [
            "{a} × {b} bằng bao nhiêu?",
            "Tính {a} * {b}.",
            "{a} × {b} = ?",
            "Nhân {a} với {b}.",
            "{a} nhân {b} được bao nhiêu?",
            "Tìm tích của {a} và {b}.",
        ],
    },
}
COLUMNS = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions",
           "ten-millions", "hundred-millions"]


def add_trace(a: int, b: int) -> str:
    """Column addition, right to left, with the carries."""
    lines = [f"{a} + {b}, column by column from the right:"]
    da, db, carry, digits = str(a)[::-1], str(b)[::-1], 0, []
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        extra = f" + {carry} (carry)" if carry else ""
        note = f", write {s % 10}, carry {s // 10}" if s >= 10 else f", write {s}"
        lines.append(f"{COLUMNS[i]}: {x} + {y}{extra} = {s}{note}")
        digits.append(s % 10)
        carry = s // 10
    if carry:
        lines.append(f"final carry: write {carry}")
    lines.append(f"{a} + {b} = {a + b}")
    return "\n".join(lines)


def sub_trace(a: int, b: int) -> str:
    """Column subtraction (a >= b), right to left, with the borrows."""
    lines = [f"{a} - {b}, column by column from the right:"]
    da, db, borrow = str(a)[::-1], str(b)[::-1], 0
    for i in range(len(da)):
        x, y = int(da[i]), int(db[i]) if i < len(db) else 0
        x_eff = x - borrow
        pre = f"{x} - {borrow} (borrowed) = {x_eff}; " if borrow else ""
        if x_eff < y:
            lines.append(f"{COLUMNS[i]}: {pre}{x_eff} < {y}, borrow 1: {x_eff + 10} - {y} = {x_eff + 10 - y}")
            borrow = 1
        else:
            lines.append(f"{COLUMNS[i]}: {pre}{x_eff} - {y} = {x_eff - y}")
            borrow = 0
    lines.append(f"{a} - {b} = {a - b}")
    return "\n".join(lines)


def mul_trace(a: int, b: int) -> str:
    """Long multiplication: one partial product per digit of b, then their sum."""
    lines = [f"{a} × {b}, one partial product per digit of {b}:"]
    partials = []
    for i, d in enumerate(str(b)[::-1]):
        place = 10 ** i
        p = a * int(d) * place
        partials.append(p)
        lines.append(f"{a} × {int(d) * place} = {p}")
    if len(partials) > 1:
        lines.append(" + ".join(map(str, partials)) + f" = {sum(partials)}")
    lines.append(f"{a} × {b} = {a * b}")
    return "\n".join(lines)


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10 ** n - 1)


class Arith(Task):
    name = "arith"
    tiers = (1, 2, 3, 4)

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        if tier == 1:  # 2-digit + 2-digit, the ones column carries
            op = "+"
            while True:
                a, b = rng.randint(10, 99), rng.randint(10, 99)
                if a % 10 + b % 10 >= 10:
                    break
        elif tier in (2, 3):
            op = rng.choice("+-")
            lo, hi = (3, 4) if tier == 2 else (5, 8)
            a, b = _digits(rng, rng.randint(lo, hi)), _digits(rng, rng.randint(lo, hi))
            if op == "-" and a < b:
                a, b = b, a
        else:
            op = "*"
            a, b = _digits(rng, rng.randint(2, 3)), _digits(rng, rng.randint(1, 2))
        result, trace = {"+": (a + b, add_trace), "-": (a - b, sub_trace), "*": (a * b, mul_trace)}[op]
        key = f"arith{op}{min(a, b)},{max(a, b)}" if op in "+*" else f"arith-{a},{b}"
        text = pick(rng, PHRASINGS[op], lang, a=a, b=b, a_wa=josa(str(a), "와"), b_reul=josa(str(b), "를"),
                    b_neun=josa(str(b), "는"))
        text += rng.choice(NUMBER_ONLY[lang])
        return Example(user(text), str(result), trace(a, b), {"key": key, "op": op, "a": a, "b": b})

    def score(self, example: Example, content: str, reply) -> float:
        return float(math_equal(example.answer, content))
