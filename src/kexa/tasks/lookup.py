"""`lookup`: key–value retrieval inside a given context (DocQA-like, scalable to long contexts).

The context is a list of `key<sep>value` lines (keys are pronounceable nonce words, values distinct
three-digit numbers); the question asks for one key's value. Tiers set the number of pairs
(`PAIRS`: 8, 32, 128, 1024 — the last a context of ~12K characters);
`Lookup(pairs={1: 4096}, name="lookup_4k")` builds a variant with longer contexts
(`kexa.tasks.register` adds it). Problem identity is the asked key: a held-out key never appears in a
training context at all (every key of a context is drawn from the asked key's split).

Reward: the reply names the asked value and no other value of the context.
"""

from __future__ import annotations

import random

from .base import Example, Task, split_of, user
from .lang import NUMBER_ONLY, josa
from .verify import integers

PAIRS = {1: 8, 2: 32, 3: 128, 4: 1024}
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
SEPARATORS = [": ", " = ", " -> ", " | "]

# (intro before the context, question after it); {key} is the asked key
PHRASINGS = {
    "en": [("Here is a list of keys and their values:", "What is the value of {key}?"),
           ("Read the table below.", "Which number belongs to {key}?"),
           ("Each line pairs a code word with a number.", "Look up {key} and give its number."),
           ("Records:", "Find the value stored under the key {key}."),
           ("Use the following entries to answer.", "What number is listed next to {key}?"),
           ("Inventory codes:", "How many units are recorded for {key}?"),
           ("Below is a small database.", "Return the value for the key {key}."),
           ("Answer from this list only.", "{key} = ?")],
    "ko": [("다음은 키와 값의 목록입니다:", "{key}의 값은 무엇인가요?"),
           ("아래 표를 읽어 보세요.", "{key}에 해당하는 숫자는 무엇인가요?"),
           ("각 줄에는 암호 단어와 숫자가 짝지어져 있습니다.", "{key_reul} 찾아 그 숫자를 알려 주세요."),
           ("기록:", "키 {key}에 저장된 값을 찾으세요."),
           ("다음 항목을 보고 답하세요.", "{key} 옆에 적힌 숫자는 몇인가요?"),
           ("재고 코드 목록:", "{key}에 기록된 수량은 몇 개인가요?"),
           ("아래는 작은 데이터베이스입니다.", "키 {key}의 값을 돌려주세요."),
           ("이 목록만 보고 답하세요.", "{key} = ?")],
    "es": [("Aquí tienes una lista de claves con sus valores:", "¿Cuál es el valor de {key}?"),
           ("Lee la siguiente tabla.", "¿Qué número corresponde a {key}?"),
           ("Cada línea une una palabra clave con un número.", "Busca {key} y dime su número."),
           ("Registros:", "Encuentra el valor guardado bajo la clave {key}."),
           ("Usa estas entradas para responder.", "¿Qué número aparece junto a {key}?"),
           ("Códigos de inventario:", "¿Cuántas unidades figuran para {key}?"),
           ("A continuación hay una pequeña base de datos.", "Devuelve el valor de la clave {key}."),
           ("Responde solo a partir de esta lista.", "{key} = ?")],
    "de": [("Hier ist eine Liste von Schlüsseln und ihren Werten:", "Welchen Wert hat {key}?"),
           ("Lies die folgende Tabelle.", "Welche Zahl gehört zu {key}?"),
           ("Jede Zeile ordnet einem Codewort eine Zahl zu.", "Schlag {key} nach und nenne die Zahl."),
           ("Einträge:", "Finde den Wert, der unter dem Schlüssel {key} steht."),
           ("Beantworte die Frage mit Hilfe dieser Liste.", "Welche Zahl steht neben {key}?"),
           ("Lagercodes:", "Wie viele Einheiten sind für {key} eingetragen?"),
           ("Unten steht eine kleine Datenbank.", "Gib den Wert zum Schlüssel {key} zurück."),
           ("Antworte nur anhand dieser Liste.", "{key} = ?")],
    "ja": [("以下はキーと値の一覧です。", "{key}の値は何ですか？"),
           ("次の表を読んでください。", "{key}に対応する数字はどれですか。"),
           ("各行には合言葉と数字の組が書かれています。", "{key}を探して、その数字を答えてください。"),
           ("記録：", "キー{key}に保存されている値を見つけてください。"),
           ("次の項目を使って答えてください。", "{key}の横に書かれている数字はいくつですか？"),
           ("在庫コード一覧：", "{key}に記録されている数量はいくつですか？"),
           ("以下は小さなデータベースです。", "キー{key}の値を返してください。"),
           ("この一覧だけを見て答えてください。", "{key} = ?")],
    "vi": [("Dưới đây là danh sách các khóa và giá trị của chúng:", "Giá trị của {key} là gì?"),
           ("Hãy đọc bảng sau.", "Số nào ứng với {key}?"),
           ("Mỗi dòng ghép một từ mã với một con số.", "Hãy tra {key} và cho biết con số của nó."),
           ("Các bản ghi:", "Tìm giá trị được lưu dưới khóa {key}."),
           ("Dùng các mục sau để trả lời.", "Con số ghi cạnh {key} là bao nhiêu?"),
           ("Mã hàng tồn kho:", "Số lượng ghi cho {key} là bao nhiêu?"),
           ("Dưới đây là một cơ sở dữ liệu nhỏ.", "Hãy trả về giá trị của khóa {key}."),
           ("Chỉ dựa vào danh sách này để trả lời.", "{key} = ?")],
}


def _nonce(rng: random.Random) -> str:
    return "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3)))


class Lookup(Task):
    name = "lookup"

    def __init__(self, pairs: dict[int, int] | None = None, name: str = "lookup"):
        self.name = name
        self.pairs = dict(pairs or PAIRS)
        self.tiers = tuple(sorted(self.pairs))

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        n = self.pairs[tier]
        asked = _nonce(rng)
        split = split_of(f"lookup:{asked}")
        keys = {asked}
        while len(keys) < n:  # every key from the asked key's split
            k = _nonce(rng)
            if split_of(f"lookup:{k}") == split:
                keys.add(k)
        keys = sorted(keys)
        rng.shuffle(keys)
        values = rng.sample(range(100, 1000), n) if n <= 900 else [rng.randint(100, 999) for _ in range(n)]
        table = dict(zip(keys, values))
        sep = rng.choice(SEPARATORS)
        context = "\n".join(f"{k}{sep}{v}" for k, v in table.items())
        intro, question = rng.choice(PHRASINGS[lang])
        question = question.format(key=asked, key_reul=josa(asked, "를")) + rng.choice(NUMBER_ONLY[lang])
        text = (f"{intro}\n{context}\n\n{question}" if rng.random() < 0.75
                else f"{question}\n\n{intro}\n{context}")
        line = keys.index(asked) + 1
        value = table[asked]
        reasoning = (f"The context has {n} lines. I look for the line whose key is {asked}.\n"
                     f"Line {line}: {asked}{sep}{value}\nThe value of {asked} is {value}.")
        others = sorted({v for k, v in table.items() if v != value})
        return Example(user(text), str(value), reasoning,
                       {"key": f"lookup:{asked}", "asked": asked, "pairs": n, "others": others})

    def score(self, example: Example, content: str, reply) -> float:
        found = set(integers(content))
        return float(int(example.answer) in found and not found.intersection(example.meta["others"]))
