"""Worked math problems, generated deterministically: the `stem` domain's main source.

Nothing on a fresh machine holds much mathematical prose, so the corpus generates it: linear and
quadratic equations, derivatives and integrals of polynomials, fractions, gcd/lcm, series, geometry,
probability, kinematics and 2×2 matrices, each with a step-by-step solution in plain text and LaTeX,
phrased in one of the six corpus languages. The same (n, seed) always gives the same problems.

    python -m kexa.data.mathgen 3
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction

# (problem, solution, answer) phrasings per language
PHRASES = {
    "en": ("Problem", "Solution", "Answer", "Solve for x", "Find the derivative of", "Evaluate the integral",
           "Compute", "Find the area of a circle with radius", "A right triangle has legs", "Find the hypotenuse."),
    "ko": ("문제", "풀이", "답", "x에 대해 풀어라", "다음 함수의 도함수를 구하시오", "다음 적분을 계산하시오",
           "계산하시오", "반지름이 다음과 같은 원의 넓이를 구하시오", "직각삼각형의 두 변의 길이가", "빗변의 길이를 구하시오."),
    "es": ("Problema", "Solución", "Respuesta", "Resuelve para x", "Halla la derivada de", "Calcula la integral",
           "Calcula", "Halla el área de un círculo de radio", "Un triángulo rectángulo tiene catetos",
           "Halla la hipotenusa."),
    "de": ("Aufgabe", "Lösung", "Antwort", "Löse nach x auf", "Bestimme die Ableitung von", "Berechne das Integral",
           "Berechne", "Bestimme die Fläche eines Kreises mit Radius", "Ein rechtwinkliges Dreieck hat die Katheten",
           "Bestimme die Hypotenuse."),
    "ja": ("問題", "解答", "答え", "xについて解け", "次の関数の導関数を求めよ", "次の積分を計算せよ",
           "計算せよ", "半径が次の円の面積を求めよ", "直角三角形の二辺の長さは", "斜辺の長さを求めよ。"),
    "vi": ("Bài toán", "Lời giải", "Đáp số", "Giải phương trình theo x", "Tính đạo hàm của", "Tính tích phân",
           "Tính", "Tính diện tích hình tròn có bán kính", "Một tam giác vuông có hai cạnh góc vuông",
           "Tính cạnh huyền."),
}
LANG_WEIGHTS = [("en", 4), ("ko", 2), ("es", 1), ("de", 1), ("ja", 1), ("vi", 1)]


def _poly(coeffs: dict[int, int]) -> str:
    """LaTeX-ish polynomial from {power: coefficient}, highest power first."""
    terms = []
    for p in sorted(coeffs, reverse=True):
        c = coeffs[p]
        if c == 0:
            continue
        mag = abs(c)
        body = ("" if mag == 1 and p else str(mag)) + ("x" if p >= 1 else "") + (f"^{p}" if p > 1 else "")
        terms.append(("- " if c < 0 else "+ ") + body)
    s = " ".join(terms) or "0"
    return s[2:] if s.startswith("+ ") else "-" + s[2:] if s.startswith("- ") else s


def linear(r: random.Random, P) -> tuple[str, str, str]:
    a, x, b = r.randint(2, 12), r.randint(-20, 20), r.randint(-50, 50)
    c = a * x + b
    sol = (f"{'Subtract' if b >= 0 else 'Add'} {abs(b)}: {a}x = {c - b}. Divide by {a}: x = {x}.\n"
           f"$$ {a}x {'+' if b >= 0 else '-'} {abs(b)} = {c} \\implies x = \\frac{{{c - b}}}{{{a}}} = {x} $$")
    return f"{P[3]}: {a}x {'+' if b >= 0 else '-'} {abs(b)} = {c}.", sol, f"x = {x}"


def quadratic(r: random.Random, P) -> tuple[str, str, str]:
    r1, r2 = r.randint(-9, 9), r.randint(-9, 9)
    b, c = -(r1 + r2), r1 * r2
    d = b * b - 4 * c
    eq = _poly({2: 1, 1: b, 0: c})
    sol = (f"$$ \\Delta = b^2 - 4ac = ({b})^2 - 4 \\cdot 1 \\cdot ({c}) = {d} $$\n"
           f"$$ x = \\frac{{-b \\pm \\sqrt{{\\Delta}}}}{{2a}} = \\frac{{{-b} \\pm {math.isqrt(d)}}}{{2}} $$\n"
           f"(x - {r1})(x - {r2}) = 0.")
    return f"{P[3]}: ${eq} = 0$.", sol, f"x = {min(r1, r2)}, x = {max(r1, r2)}"


def derivative(r: random.Random, P) -> tuple[str, str, str]:
    coeffs = {p: r.randint(-9, 9) for p in range(r.randint(2, 5), -1, -1)}
    deriv = {p - 1: c * p for p, c in coeffs.items() if p > 0}
    steps = ", ".join(f"\\frac{{d}}{{dx}} x^{{{p}}} = {p}x^{{{p - 1}}}" for p in sorted(coeffs, reverse=True) if p > 1)
    sol = f"Power rule: {steps}.\n$$ f'(x) = {_poly(deriv)} $$"
    return f"{P[4]} $f(x) = {_poly(coeffs)}$.", sol, f"$f'(x) = {_poly(deriv)}$"


def integral(r: random.Random, P) -> tuple[str, str, str]:
    coeffs = {p: r.randint(-6, 6) for p in range(r.randint(1, 3), -1, -1)}
    lo, hi = sorted(r.sample(range(-3, 6), 2))
    anti = {p + 1: Fraction(c, p + 1) for p, c in coeffs.items()}
    val = sum(c * (Fraction(hi) ** p - Fraction(lo) ** p) for p, c in anti.items())
    anti_s = " + ".join(f"\\frac{{{c.numerator}}}{{{c.denominator}}}x^{{{p}}}" for p, c in sorted(anti.items(), reverse=True) if c)
    sol = f"$$ F(x) = {anti_s or '0'} $$\n$$ \\int_{{{lo}}}^{{{hi}}} f(x)\\,dx = F({hi}) - F({lo}) = {val} $$"
    return f"{P[5]} $\\int_{{{lo}}}^{{{hi}}} ({_poly(coeffs)})\\,dx$.", sol, str(val)


def fractions_(r: random.Random, P) -> tuple[str, str, str]:
    a, b = Fraction(r.randint(1, 12), r.randint(2, 12)), Fraction(r.randint(1, 12), r.randint(2, 12))
    op = r.choice("+-×÷")
    res = {"+": a + b, "-": a - b, "×": a * b, "÷": a / b}[op]
    tex = {"+": "+", "-": "-", "×": "\\times", "÷": "\\div"}[op]
    lcd = a.denominator * b.denominator // math.gcd(a.denominator, b.denominator)
    sol = (f"Common denominator {lcd}.\n$$ \\frac{{{a.numerator}}}{{{a.denominator}}} {tex} "
           f"\\frac{{{b.numerator}}}{{{b.denominator}}} = \\frac{{{res.numerator}}}{{{res.denominator}}} $$")
    return f"{P[6]}: {a} {op} {b}.", sol, str(res)


def gcd_lcm(r: random.Random, P) -> tuple[str, str, str]:
    a, b = r.randint(12, 999), r.randint(12, 999)
    g = math.gcd(a, b)
    steps, x, y = [], a, b
    while y:
        steps.append(f"{x} = {x // y} · {y} + {x % y}")
        x, y = y, x % y
    sol = "Euclid: " + "; ".join(steps) + f".\ngcd({a}, {b}) = {g}, lcm = {a} · {b} / {g} = {a * b // g}."
    return f"{P[6]}: gcd({a}, {b}), lcm({a}, {b}).", sol, f"{g}, {a * b // g}"


def series(r: random.Random, P) -> tuple[str, str, str]:
    n = r.randint(5, 200)
    if r.random() < 0.5:
        val = n * (n + 1) // 2
        return (f"{P[6]}: $\\sum_{{k=1}}^{{{n}}} k$.", f"$$ \\sum_{{k=1}}^{{n}} k = \\frac{{n(n+1)}}{{2}} = "
                f"\\frac{{{n} \\cdot {n + 1}}}{{2}} = {val} $$", str(val))
    val = n * (n + 1) * (2 * n + 1) // 6
    return (f"{P[6]}: $\\sum_{{k=1}}^{{{n}}} k^2$.", f"$$ \\sum_{{k=1}}^{{n}} k^2 = \\frac{{n(n+1)(2n+1)}}{{6}} = {val} $$",
            str(val))


def geometry(r: random.Random, P) -> tuple[str, str, str]:
    if r.random() < 0.5:
        rad = r.randint(1, 30)
        return (f"{P[7]} {rad} cm.", f"$$ A = \\pi r^2 = \\pi \\cdot {rad}^2 = {rad * rad}\\pi \\approx "
                f"{math.pi * rad * rad:.2f}\\ \\text{{cm}}^2 $$", f"{rad * rad}π cm²")
    m, n = r.randint(2, 9), r.randint(1, 8)
    a, b = m * m - n * n if m > n else 2 * m * n + 1, 2 * m * n
    c = math.hypot(a, b)
    return (f"{P[8]} a = {a}, b = {b}. {P[9]}", f"$$ c = \\sqrt{{a^2 + b^2}} = \\sqrt{{{a * a} + {b * b}}} "
            f"= \\sqrt{{{a * a + b * b}}} \\approx {c:.4g} $$", f"{c:.4g}")


def probability(r: random.Random, P) -> tuple[str, str, str]:
    k = r.randint(2, 12)
    ways = sum(1 for i in range(1, 7) for j in range(1, 7) if i + j == k)
    p = Fraction(ways, 36)
    return (f"{P[6]}: P(X + Y = {k}), X, Y ∈ {{1, …, 6}}.",
            f"{ways} of the 36 outcomes give {k}.\n$$ P = \\frac{{{ways}}}{{36}} = \\frac{{{p.numerator}}}{{{p.denominator}}} $$",
            str(p))


def kinematics(r: random.Random, P) -> tuple[str, str, str]:
    v0, a, t = r.randint(0, 30), r.randint(1, 10), r.randint(1, 20)
    v, s = v0 + a * t, v0 * t + a * t * t / 2
    return (f"{P[6]}: v_0 = {v0} m/s, a = {a} m/s², t = {t} s; v = ?, s = ?",
            f"$$ v = v_0 + at = {v0} + {a} \\cdot {t} = {v}\\ \\text{{m/s}} $$\n"
            f"$$ s = v_0 t + \\tfrac{{1}}{{2}} a t^2 = {s:g}\\ \\text{{m}} $$", f"v = {v} m/s, s = {s:g} m")


def matrix(r: random.Random, P) -> tuple[str, str, str]:
    A = [[r.randint(-5, 5) for _ in range(2)] for _ in range(2)]
    B = [[r.randint(-5, 5) for _ in range(2)] for _ in range(2)]
    C = [[sum(A[i][k] * B[k][j] for k in range(2)) for j in range(2)] for i in range(2)]
    det = A[0][0] * A[1][1] - A[0][1] * A[1][0]

    def tex(M):
        return "\\begin{pmatrix} " + " \\\\ ".join(" & ".join(map(str, row)) for row in M) + " \\end{pmatrix}"

    return (f"{P[6]}: $AB$, $\\det A$; $A = {tex(A)}$, $B = {tex(B)}$.",
            f"$$ AB = {tex(C)} $$\n$$ \\det A = ({A[0][0]})({A[1][1]}) - ({A[0][1]})({A[1][0]}) = {det} $$",
            f"det A = {det}")


KINDS: list[Callable] = [linear, quadratic, derivative, integral, fractions_, gcd_lcm, series, geometry,
                         probability, kinematics, matrix]


def problems(n: int, seed: int = 0) -> Iterator[str]:
    """`n` worked problems (deterministic in `seed`), each as one text document."""
    r = random.Random(seed)
    langs = [lang for lang, w in LANG_WEIGHTS for _ in range(w)]
    for _ in range(n):
        P = PHRASES[r.choice(langs)]
        question, solution, answer = r.choice(KINDS)(r, P)
        yield f"{P[0]}. {question}\n\n{P[1]}.\n{solution}\n\n{P[2]}: {answer}\n"


if __name__ == "__main__":
    for text in problems(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        print(text)
