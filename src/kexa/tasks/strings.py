"""`strings`: character-level edits — reverse a word, change its case, count a letter — with a trace
that spells the word out letter by letter.

Words are random lowercase strings (letter-level skills must not lean on memorised words); tiers set
their length: 1 four to six letters, 2 seven to ten, 3 eleven to sixteen. Counting draws from a small
alphabet so the letter occurs several times. Problem identity: the operation, the word and the letter.
Reward: reverse/case compare the answer exactly — the whole reply or the word it ends on (its last
quoted string, else its last word; quotes, bold and a final full stop ignored; case matters);
counting is a number, by math-verify.
"""

from __future__ import annotations

import random
import string

from .base import Example, Task, pick, user
from .lang import particle_for
from .verify import final_word, math_equal, plain

LENGTHS = {1: (4, 6), 2: (7, 10), 3: (11, 16)}

PHRASINGS = {
    "reverse": {
        "en": [
            'Reverse the string "{w}".',
            'Write "{w}" backwards.',
            "Spell {w} in reverse order.",
            'What is "{w}" read from right to left?',
        ],
        "ko": [
            '문자열 "{w}"{w_reul} 거꾸로 쓰세요.',
            '"{w}"{w_reul} 뒤집어서 적어 주세요.',
            "{w}의 글자 순서를 반대로 하면?",
            '"{w}"{w_reul} 오른쪽에서 왼쪽으로 읽으면 어떻게 되나요?',
        ],
        "es": [
            'Invierte la cadena "{w}".',
            'Escribe "{w}" al revés.',
            "Deletrea {w} en orden inverso.",
            '¿Cómo se lee "{w}" de derecha a izquierda?',
        ],
        "de": [
            'Kehre die Zeichenkette "{w}" um.',
            'Schreib "{w}" rückwärts.',
            "Buchstabiere {w} in umgekehrter Reihenfolge.",
            'Wie lautet "{w}" von rechts nach links gelesen?',
        ],
        "ja": [
            "文字列「{w}」を逆順にしてください。",
            "「{w}」を後ろから書いてください。",
            "{w} の文字の順番を逆にすると？",
            "「{w}」を右から左に読むとどうなりますか。",
        ],
        "vi": [
            'Hãy đảo ngược chuỗi "{w}".',
            'Viết ngược "{w}".',
            "Đánh vần {w} theo thứ tự ngược lại.",
            'Đọc "{w}" từ phải sang trái thì được gì?',
        ],
    },
    "upper": {
        "en": ['Write "{w}" in uppercase.', "Convert {w} to capital letters.", 'Turn "{w}" into all caps.'],
        "ko": [
            '"{w}"{w_reul} 대문자로 쓰세요.',
            "{w}{w_reul} 모두 대문자로 바꾸세요.",
            '"{w}"의 모든 글자를 대문자로 바꾸면?',
        ],
        "es": ['Escribe "{w}" en mayúsculas.', "Convierte {w} a letras mayúsculas.", 'Pasa "{w}" todo a mayúsculas.'],
        "de": [
            'Schreib "{w}" in Großbuchstaben.',
            "Wandle {w} in Großbuchstaben um.",
            'Setze "{w}" ganz in Großbuchstaben.',
        ],
        "ja": [
            "「{w}」を大文字で書いてください。",
            "{w} をすべて大文字に変換してください。",
            "「{w}」の文字を全部大文字にすると？",
        ],
        "vi": [
            'Viết "{w}" bằng chữ in hoa.',
            "Chuyển {w} thành chữ hoa.",
            'Đổi tất cả chữ cái của "{w}" thành chữ hoa.',
        ],
    },
    "lower": {
        "en": ['Write "{w}" in lowercase.', "Convert {w} to small letters.", 'Turn "{w}" into all lowercase.'],
        "ko": [
            '"{w}"{w_reul} 소문자로 쓰세요.',
            "{w}{w_reul} 모두 소문자로 바꾸세요.",
            '"{w}"의 모든 글자를 소문자로 바꾸면?',
        ],
        "es": ['Escribe "{w}" en minúsculas.', "Convierte {w} a letras minúsculas.", 'Pasa "{w}" todo a minúsculas.'],
        "de": [
            'Schreib "{w}" in Kleinbuchstaben.',
            "Wandle {w} in Kleinbuchstaben um.",
            'Setze "{w}" ganz in Kleinbuchstaben.',
        ],
        "ja": [
            "「{w}」を小文字で書いてください。",
            "{w} をすべて小文字に変換してください。",
            "「{w}」の文字を全部小文字にすると？",
        ],
        "vi": [
            'Viết "{w}" bằng chữ thường.',
            "Chuyển {w} thành chữ thường.",
            'Đổi tất cả chữ cái của "{w}" thành chữ thường.',
        ],
    },
    "count": {
        "en": [
            'How many times does the letter "{c}" appear in "{w}"?',
            "Count the letter {c} in {w}.",
            'How many "{c}"s are there in "{w}"?',
        ],
        "ko": [
            '"{w}"에 글자 "{c}"{c_neun} 몇 번 나오나요?',
            "{w}에서 {c}의 개수를 세세요.",
            '"{w}" 안에 "{c}"{c_ga} 몇 개 있나요?',
        ],
        "es": [
            '¿Cuántas veces aparece la letra "{c}" en "{w}"?',
            "Cuenta la letra {c} en {w}.",
            '¿Cuántas "{c}" hay en "{w}"?',
        ],
        "de": [
            'Wie oft kommt der Buchstabe "{c}" in "{w}" vor?',
            "Zähle den Buchstaben {c} in {w}.",
            'Wie viele "{c}" stecken in "{w}"?',
        ],
        "ja": [
            "「{w}」に文字「{c}」は何回出てきますか？",
            "{w} に含まれる {c} の数を数えてください。",
            "「{w}」の中に「{c}」はいくつありますか。",
        ],
        "vi": [
            'Chữ "{c}" xuất hiện bao nhiêu lần trong "{w}"?',
            "Đếm số chữ {c} trong {w}.",
            'Trong "{w}" có bao nhiêu chữ "{c}"?',
        ],
    },
}


class Strings(Task):
    name = "strings"
    tiers = (1, 2, 3)

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        op = rng.choice(["reverse", "reverse", "upper", "lower", "count", "count"])
        n = rng.randint(*LENGTHS[tier])
        alphabet = rng.sample(string.ascii_lowercase, 4) if op == "count" else string.ascii_lowercase
        w = "".join(rng.choice(alphabet) for _ in range(n))
        if op == "lower":  # a mixed-case word to lower
            w = "".join(ch.upper() if rng.random() < 0.6 else ch for ch in w)
        c = rng.choice(w) if op == "count" else ""
        spelled = " ".join(f"{i + 1}:{ch}" for i, ch in enumerate(w))
        if op == "reverse":
            answer = w[::-1]
            trace = f"letters of {w}: {spelled}\nfrom the last to the first: {' '.join(answer)}\nreversed: {answer}"
        elif op in ("upper", "lower"):
            answer = w.upper() if op == "upper" else w.lower()
            pairs = " ".join(f"{a}->{b}" for a, b in zip(w, answer))
            trace = f"each letter to {op}case: {pairs}\nresult: {answer}"
        else:
            answer = str(w.count(c))
            hits, k = [], 0
            for i, ch in enumerate(w):
                k += ch == c
                hits.append(f"{i + 1}:{ch}{' (' + str(k) + ')' if ch == c else ''}")
            trace = f"scan {w} for {c}: {' '.join(hits)}\n{c} appears {answer} times"
        text = pick(rng, PHRASINGS[op], lang, w=w, c=c, w_reul=particle_for(w, "를"),
                    c_neun=particle_for(c or "a", "는"), c_ga=particle_for(c or "a", "가"))
        return Example(user(text), answer, trace, {"key": f"strings:{op}:{w}:{c}", "op": op, "word": w, "letter": c})

    def score(self, example: Example, content: str, reply) -> float:
        if example.meta["op"] == "count":
            return float(math_equal(example.answer, content))
        return float(example.answer in (plain(content), final_word(content)))

    def corrupt(self, example: Example, rng: random.Random) -> str:
        if example.meta["op"] == "count":
            return super().corrupt(example, rng)
        a = example.answer
        if example.meta["op"] == "reverse" and a != a[::-1]:
            return example.meta["word"]  # the unreversed word: the classic mistake
        i = rng.randrange(len(a))
        if example.meta["op"] == "reverse":  # a palindrome: change one letter
            return a[:i] + ("a" if a[i] != "a" else "b") + a[i + 1:]
        return a[:i] + a[i].swapcase() + a[i + 1:]
