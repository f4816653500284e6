"""`sorting`: sort a list (ascending or descending), find its minimum or maximum, or count the items
that satisfy a condition — with a trace of the selection-sort passes, the running extreme, or the
running count.

Tiers set the list: 1 five numbers below 100, 2 eight, 3 twelve, 4 twenty numbers below 1000.
Problem identity: the operation and the list as a multiset (a shuffled held-out list is the same problem).
Reward: for a sort, the reply's integers (or those of its last line with numbers) are exactly the
sorted list; otherwise math-verify on the number.
"""

from __future__ import annotations

import random

from .base import Example, Task, pick, user
from .lang import josa
from .verify import integers, math_equal

SIZES = {1: (5, 99), 2: (8, 99), 3: (12, 99), 4: (20, 999)}

PHRASINGS = {
    "asc": {
        "en": [
            "Sort these numbers from smallest to largest: {xs}",
            "Put in ascending order: {xs}",
            "Arrange {xs} in increasing order.",
            "List the numbers {xs} sorted ascending.",
            "Order from least to greatest: {xs}",
            "Can you sort {xs} so the smallest comes first?",
            "Rewrite the list {xs} in ascending order.",
        ],
        "ko": [
            "다음 수들을 작은 것부터 큰 순서로 정렬하세요: {xs}",
            "오름차순으로 정렬하시오: {xs}",
            "{xs_eul} 오름차순으로 나열해 주세요.",
            "숫자 {xs_eul} 작은 수부터 차례대로 쓰세요.",
            "작은 수부터 순서대로 늘어놓으세요: {xs}",
            "{xs_eul} 가장 작은 수가 맨 앞에 오도록 정렬해 줄래요?",
            "목록 {xs_eul} 오름차순으로 다시 쓰세요.",
        ],
        "es": [
            "Ordena estos números de menor a mayor: {xs}",
            "Pon en orden ascendente: {xs}",
            "Ordena {xs} de forma creciente.",
            "Escribe los números {xs} ordenados de menor a mayor.",
            "Ordena de menor a mayor la lista: {xs}",
            "¿Puedes ordenar {xs} empezando por el más pequeño?",
            "Reescribe la lista {xs} en orden ascendente.",
        ],
        "de": [
            "Sortiere diese Zahlen aufsteigend: {xs}",
            "Ordne der Größe nach, die kleinste zuerst: {xs}",
            "Bring {xs} in aufsteigende Reihenfolge.",
            "Schreib die Zahlen {xs} vom Kleinsten zum Größten.",
            "Von klein nach groß ordnen: {xs}",
            "Kannst du {xs} so sortieren, dass die kleinste Zahl vorne steht?",
            "Schreib die Liste {xs} aufsteigend sortiert.",
        ],
        "ja": [
            "次の数を小さい順に並べてください：{xs}",
            "昇順に並べ替えなさい：{xs}",
            "{xs} を小さいものから順に並べてください。",
            "数 {xs} を昇順に書いてください。",
            "小さい数から順に並べて：{xs}",
            "{xs} を一番小さい数が先頭になるように並べ替えてくれますか？",
            "リスト {xs} を昇順に書き直してください。",
        ],
        "vi": [
            "Sắp xếp các số sau từ nhỏ đến lớn: {xs}",
            "Xếp theo thứ tự tăng dần: {xs}",
            "Hãy sắp xếp {xs} theo thứ tự tăng dần.",
            "Viết các số {xs} theo thứ tự từ bé đến lớn.",
            "Xếp từ bé đến lớn: {xs}",
            "Bạn có thể sắp xếp {xs} sao cho số nhỏ nhất đứng đầu không?",
            "Viết lại danh sách {xs} theo thứ tự tăng dần.",
        ],
    },
    "desc": {
        "en": [
            "Sort these numbers from largest to smallest: {xs}",
            "Put in descending order: {xs}",
            "Arrange {xs} in decreasing order.",
            "Order from greatest to least: {xs}",
            "Rewrite the list {xs} with the largest number first.",
        ],
        "ko": [
            "다음 수들을 큰 것부터 작은 순서로 정렬하세요: {xs}",
            "내림차순으로 정렬하시오: {xs}",
            "{xs_eul} 큰 수부터 차례대로 나열해 주세요.",
            "큰 수부터 순서대로 늘어놓으세요: {xs}",
            "목록 {xs_eul} 가장 큰 수가 맨 앞에 오도록 다시 쓰세요.",
        ],
        "es": [
            "Ordena estos números de mayor a menor: {xs}",
            "Pon en orden descendente: {xs}",
            "Ordena {xs} de forma decreciente.",
            "Ordena de mayor a menor la lista: {xs}",
            "Reescribe la lista {xs} empezando por el número más grande.",
        ],
        "de": [
            "Sortiere diese Zahlen absteigend: {xs}",
            "Ordne der Größe nach, die größte zuerst: {xs}",
            "Bring {xs} in absteigende Reihenfolge.",
            "Von groß nach klein ordnen: {xs}",
            "Schreib die Liste {xs} so, dass die größte Zahl vorne steht.",
        ],
        "ja": [
            "次の数を大きい順に並べてください：{xs}",
            "降順に並べ替えなさい：{xs}",
            "{xs} を大きいものから順に並べてください。",
            "大きい数から順に並べて：{xs}",
            "リスト {xs} を一番大きい数が先頭になるように書き直してください。",
        ],
        "vi": [
            "Sắp xếp các số sau từ lớn đến nhỏ: {xs}",
            "Xếp theo thứ tự giảm dần: {xs}",
            "Hãy sắp xếp {xs} theo thứ tự giảm dần.",
            "Xếp từ lớn đến bé: {xs}",
            "Viết lại danh sách {xs} sao cho số lớn nhất đứng đầu.",
        ],
    },
    "min": {
        "en": [
            "What is the smallest of these numbers: {xs}?",
            "Find the minimum of {xs}.",
            "Which number is the least: {xs}?",
            "Among {xs}, which is the lowest?",
            "Tell me the minimum value in this list: {xs}",
        ],
        "ko": [
            "다음 수 중 가장 작은 수는 무엇인가요? {xs}",
            "{xs} 중 최솟값을 구하시오.",
            "{xs} 가운데 제일 작은 수는?",
            "이 목록에서 최솟값을 알려 주세요: {xs}",
            "{xs} 중에서 가장 작은 값은 얼마예요?",
        ],
        "es": [
            "¿Cuál es el menor de estos números: {xs}?",
            "Halla el mínimo de {xs}.",
            "¿Qué número es el más pequeño: {xs}?",
            "Entre {xs}, ¿cuál es el más bajo?",
            "Dime el valor mínimo de esta lista: {xs}",
        ],
        "de": [
            "Welche ist die kleinste dieser Zahlen: {xs}?",
            "Bestimme das Minimum von {xs}.",
            "Welche Zahl ist am kleinsten: {xs}?",
            "Welcher Wert ist unter {xs} der niedrigste?",
            "Nenne mir den kleinsten Wert dieser Liste: {xs}",
        ],
        "ja": [
            "次の数の中で最も小さいものはどれですか：{xs}",
            "{xs} の最小値を求めなさい。",
            "{xs} のうち一番小さい数は？",
            "このリストの最小値を教えてください：{xs}",
            "{xs} の中で一番小さい値はいくつですか？",
        ],
        "vi": [
            "Số nhỏ nhất trong các số sau là số nào: {xs}?",
            "Tìm giá trị nhỏ nhất của {xs}.",
            "Trong {xs}, số nào bé nhất?",
            "Trong {xs}, giá trị thấp nhất là bao nhiêu?",
            "Cho tôi biết giá trị nhỏ nhất trong danh sách này: {xs}",
        ],
    },
    "max": {
        "en": [
            "What is the largest of these numbers: {xs}?",
            "Find the maximum of {xs}.",
            "Which number is the greatest: {xs}?",
            "Among {xs}, which is the highest?",
            "Tell me the maximum value in this list: {xs}",
        ],
        "ko": [
            "다음 수 중 가장 큰 수는 무엇인가요? {xs}",
            "{xs} 중 최댓값을 구하시오.",
            "{xs} 가운데 제일 큰 수는?",
            "이 목록에서 최댓값을 알려 주세요: {xs}",
            "{xs} 중에서 가장 큰 값은 얼마예요?",
        ],
        "es": [
            "¿Cuál es el mayor de estos números: {xs}?",
            "Halla el máximo de {xs}.",
            "¿Qué número es el más grande: {xs}?",
            "Entre {xs}, ¿cuál es el más alto?",
            "Dime el valor máximo de esta lista: {xs}",
        ],
        "de": [
            "Welche ist die größte dieser Zahlen: {xs}?",
            "Bestimme das Maximum von {xs}.",
            "Welche Zahl ist am größten: {xs}?",
            "Welcher Wert ist unter {xs} der höchste?",
            "Nenne mir den größten Wert dieser Liste: {xs}",
        ],
        "ja": [
            "次の数の中で最も大きいものはどれですか：{xs}",
            "{xs} の最大値を求めなさい。",
            "{xs} のうち一番大きい数は？",
            "このリストの最大値を教えてください：{xs}",
            "{xs} の中で一番大きい値はいくつですか？",
        ],
        "vi": [
            "Số lớn nhất trong các số sau là số nào: {xs}?",
            "Tìm giá trị lớn nhất của {xs}.",
            "Trong {xs}, số nào lớn nhất?",
            "Trong {xs}, giá trị cao nhất là bao nhiêu?",
            "Cho tôi biết giá trị lớn nhất trong danh sách này: {xs}",
        ],
    },
    "count": {
        "en": [
            "How many of these numbers are greater than {k}: {xs}?",
            "Count the numbers above {k} in {xs}.",
            "In the list {xs}, how many values exceed {k}?",
            "Here is a list: {xs}. How many numbers in it are bigger than {k}?",
        ],
        "ko": [
            "다음 수 중 {k}보다 큰 수는 몇 개인가요? {xs}",
            "{xs}에서 {k}보다 큰 수의 개수를 세시오.",
            "{xs} 가운데 {k_eul} 넘는 수는 몇 개예요?",
            "목록: {xs}. 이 중 {k}보다 큰 수는 모두 몇 개인가요?",
        ],
        "es": [
            "¿Cuántos de estos números son mayores que {k}: {xs}?",
            "Cuenta los números mayores que {k} en {xs}.",
            "En la lista {xs}, ¿cuántos valores superan {k}?",
            "Esta es la lista: {xs}. ¿Cuántos números son mayores que {k}?",
        ],
        "de": [
            "Wie viele dieser Zahlen sind größer als {k}: {xs}?",
            "Zähle die Zahlen über {k} in {xs}.",
            "Wie viele Werte in der Liste {xs} sind größer als {k}?",
            "Hier ist eine Liste: {xs}. Wie viele Zahlen darin sind größer als {k}?",
        ],
        "ja": [
            "次の数のうち{k}より大きいものはいくつありますか：{xs}",
            "{xs} の中で{k}より大きい数を数えなさい。",
            "リスト {xs} で{k}を超える値は何個ありますか？",
            "リスト：{xs}。この中で{k}より大きい数は全部でいくつですか？",
        ],
        "vi": [
            "Có bao nhiêu số lớn hơn {k} trong các số sau: {xs}?",
            "Đếm các số lớn hơn {k} trong {xs}.",
            "Trong danh sách {xs}, có bao nhiêu giá trị vượt quá {k}?",
            "Đây là danh sách: {xs}. Có bao nhiêu số trong đó lớn hơn {k}?",
        ],
    },
}


def sort_trace(xs: list[int], descending: bool) -> str:
    """Selection sort: each pass takes the extreme of what is left."""
    rest, done, lines = list(xs), [], []
    word = "largest" if descending else "smallest"
    for i in range(len(xs)):
        x = max(rest) if descending else min(rest)
        rest.remove(x)
        done.append(x)
        lines.append(f"pass {i + 1}: the {word} of the rest is {x}; sorted so far: {', '.join(map(str, done))}")
    return "\n".join(lines)


def extreme_trace(xs: list[int], op: str) -> str:
    best, lines = xs[0], [f"start with {xs[0]}"]
    for x in xs[1:]:
        better = x < best if op == "min" else x > best
        lines.append(f"{x} {'<' if op == 'min' else '>'} {best}: new {op} {x}" if better else f"{x}: keep {best}")
        best = x if better else best
    lines.append(f"{op} = {best}")
    return "\n".join(lines)


def count_trace(xs: list[int], k: int) -> str:
    n, lines = 0, []
    for x in xs:
        n += x > k
        lines.append(f"{x} > {k}? {'yes' if x > k else 'no'} (count {n})")
    lines.append(f"count = {n}")
    return "\n".join(lines)


class Sorting(Task):
    name = "sorting"
    tiers = (1, 2, 3, 4)

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        n, top = SIZES[tier]
        xs = [rng.randint(1, top) for _ in range(n)]
        op = rng.choice(["asc", "asc", "desc", "min", "max", "count"])
        k = rng.randint(top // 5, 4 * top // 5)
        ms = ",".join(map(str, sorted(xs)))
        sep = "、" if lang == "ja" and rng.random() < 0.5 else ", "
        shown = sep.join(map(str, xs))
        text = pick(rng, PHRASINGS[op], lang, xs=shown, k=k, xs_eul=josa(shown, "을"), k_eul=josa(str(k), "을"))
        if op in ("asc", "desc"):
            ys = sorted(xs, reverse=op == "desc")
            answer, trace = ", ".join(map(str, ys)), sort_trace(xs, op == "desc")
        elif op in ("min", "max"):
            answer, trace = str(min(xs) if op == "min" else max(xs)), extreme_trace(xs, op)
        else:
            answer, trace = str(sum(x > k for x in xs)), count_trace(xs, k)
        key = f"sorting:{op}:{ms}" + (f">{k}" if op == "count" else "")
        return Example(user(text), answer, trace, {"key": key, "op": op, "xs": xs, "k": k})

    def score(self, example: Example, content: str, reply) -> float:
        if example.meta["op"] in ("asc", "desc"):  # the whole reply's numbers, or its last line's
            want = integers(example.answer)
            lines = [integers(line) for line in content.splitlines() if integers(line)]
            return float(integers(content) == want or bool(lines) and lines[-1] == want)
        return float(math_equal(example.answer, content))
