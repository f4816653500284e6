"""`instruct`: instruction-following constraints with rule verifiers (IFEval-like, six languages).

Kinds — tier 1: `count` (name exactly N things of a category, comma-separated), `words` (one
sentence of exactly N words; N characters in Japanese), `json` (restate given
facts as a JSON object with exactly the given keys and values), `language` (write one sentence on a
topic in a named language, checked by `lingua` language identification); tier 2: `include` / `avoid`
(an exact-N list that must contain / must not mention a given word).
Reference answers come from native word and sentence banks. Verifiers check the rule, plus the content
where the prompt fixes it (the JSON values); a `count` reply of N unrelated words passes, because the
rule being taught is the count (the category is not verified: no bank lists every fruit).
Problem identity: the kind, the numbers, the category or topic, the keyword and the target language.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache

from .base import Example, Task, pick, user
from .lang import LANGUAGE_NAMES, PEOPLE, josa, particle_for
from .verify import plain

CATEGORIES = {  # category -> lang -> (name in a prompt, items)
    "fruit": {"en": ("fruits", ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear"]),
              "ko": ("과일", ["사과", "바나나", "체리", "포도", "레몬", "망고", "복숭아", "배"]),
              "es": ("frutas", ["manzana", "plátano", "cereza", "uva", "limón", "mango", "melocotón", "pera"]),
              "de": ("Obstsorten", ["Apfel", "Banane", "Kirsche", "Traube", "Zitrone", "Mango", "Pfirsich", "Birne"]),
              "ja": ("果物", ["りんご", "バナナ", "さくらんぼ", "ぶどう", "レモン", "マンゴー", "もも", "なし"]),
              "vi": ("loại trái cây", ["táo", "chuối", "dưa hấu", "nho", "chanh", "xoài", "đào", "lê"])},
    "animal": {"en": ("animals", ["cat", "dog", "horse", "rabbit", "tiger", "lion", "bear", "fox"]),
               "ko": ("동물", ["고양이", "개", "말", "토끼", "호랑이", "사자", "곰", "여우"]),
               "es": ("animales", ["gato", "perro", "caballo", "conejo", "tigre", "león", "oso", "zorro"]),
               "de": ("Tiere", ["Katze", "Hund", "Pferd", "Hase", "Tiger", "Löwe", "Bär", "Fuchs"]),
               "ja": ("動物", ["ねこ", "いぬ", "うま", "うさぎ", "とら", "ライオン", "くま", "きつね"]),
               "vi": ("con vật", ["mèo", "chó", "ngựa", "thỏ", "hổ", "sư tử", "gấu", "cáo"])},
    "color": {"en": ("colours", ["red", "blue", "green", "yellow", "black", "white", "purple", "orange"]),
              "ko": ("색깔", ["빨강", "파랑", "초록", "노랑", "검정", "하양", "보라", "주황"]),
              "es": ("colores", ["rojo", "azul", "verde", "amarillo", "negro", "blanco", "morado", "naranja"]),
              "de": ("Farben", ["Rot", "Blau", "Grün", "Gelb", "Schwarz", "Weiß", "Lila", "Orange"]),
              "ja": ("色", ["赤", "青", "緑", "黄色", "黒", "白", "紫", "オレンジ"]),
              "vi": ("màu sắc", ["đỏ", "xanh dương", "xanh lá", "vàng", "đen", "trắng", "tím", "cam"])},
}
SENTENCES = {  # topic -> lang -> sentences (the reference replies of the `language` kind)
    "weather": {
        "en": ["The weather is sunny and warm today.", "It has been raining since this morning."],
        "ko": ["오늘은 날씨가 맑고 따뜻합니다.", "아침부터 계속 비가 내리고 있어요."],
        "es": ["Hoy hace sol y calor.", "Está lloviendo desde esta mañana."],
        "de": ["Heute ist das Wetter sonnig und warm.", "Es regnet schon seit heute Morgen."],
        "ja": ["今日は晴れていて暖かいです。", "今朝からずっと雨が降っています。"],
        "vi": ["Hôm nay trời nắng và ấm áp.", "Trời đã mưa từ sáng đến giờ."],
    },
    "food": {
        "en": ["My favourite food is a warm bowl of noodle soup.", "We ate fresh bread and cheese for breakfast."],
        "ko": ["제가 제일 좋아하는 음식은 따뜻한 국수입니다.", "우리는 아침으로 갓 구운 빵과 치즈를 먹었어요."],
        "es": ["Mi comida favorita es una sopa de fideos caliente.", "Desayunamos pan recién hecho con queso."],
        "de": [
            "Mein Lieblingsessen ist eine warme Nudelsuppe.",
            "Zum Frühstück haben wir frisches Brot mit Käse gegessen.",
        ],
        "ja": ["私の好きな食べ物は温かいラーメンです。", "朝ごはんに焼きたてのパンとチーズを食べました。"],
        "vi": [
            "Món ăn tôi thích nhất là một bát phở nóng.",
            "Chúng tôi đã ăn bánh mì mới nướng với phô mai cho bữa sáng.",
        ],
    },
    "family": {
        "en": [
            "My sister and I visit our grandparents every weekend.",
            "Our family has dinner together every evening.",
        ],
        "ko": ["언니와 저는 주말마다 할머니 댁에 갑니다.", "우리 가족은 매일 저녁 함께 식사를 해요."],
        "es": [
            "Mi hermana y yo visitamos a nuestros abuelos cada fin de semana.",
            "Mi familia cena junta todas las noches.",
        ],
        "de": [
            "Meine Schwester und ich besuchen jedes Wochenende unsere Großeltern.",
            "Unsere Familie isst jeden Abend gemeinsam.",
        ],
        "ja": ["姉と私は毎週末、祖父母の家に行きます。", "私の家族は毎晩一緒に夕食を食べます。"],
        "vi": ["Chị tôi và tôi về thăm ông bà vào mỗi cuối tuần.", "Gia đình tôi ăn tối cùng nhau mỗi buổi tối."],
    },
    "travel": {
        "en": [
            "Next summer I want to travel by train along the coast.",
            "The old town was full of narrow streets and small shops.",
        ],
        "ko": [
            "내년 여름에는 기차를 타고 바닷가를 따라 여행하고 싶어요.",
            "그 오래된 마을에는 좁은 골목과 작은 가게가 가득했습니다.",
        ],
        "es": [
            "El próximo verano quiero viajar en tren por la costa.",
            "El casco antiguo estaba lleno de calles estrechas y tiendas pequeñas.",
        ],
        "de": [
            "Nächsten Sommer möchte ich mit dem Zug an der Küste entlang reisen.",
            "Die Altstadt war voller enger Gassen und kleiner Läden.",
        ],
        "ja": ["来年の夏は電車で海沿いを旅したいです。", "その古い町には細い路地と小さな店がたくさんありました。"],
        "vi": [
            "Mùa hè năm sau tôi muốn đi tàu hỏa dọc theo bờ biển.",
            "Khu phố cổ đầy những con hẻm hẹp và cửa hàng nhỏ.",
        ],
    },
}
TOPICS = {  # topic names as prompts write them
    "weather": {"en": "the weather", "ko": "날씨", "es": "el tiempo", "de": "das Wetter", "ja": "天気", "vi": "thời tiết"},
    "food": {"en": "food", "ko": "음식", "es": "la comida", "de": "Essen", "ja": "食べ物", "vi": "đồ ăn"},
    "family": {"en": "family", "ko": "가족", "es": "la familia", "de": "die Familie", "ja": "家族", "vi": "gia đình"},
    "travel": {"en": "travel", "ko": "여행", "es": "los viajes", "de": "das Reisen", "ja": "旅行", "vi": "du lịch"},
}
CITIES = {"en": ["London", "Seoul", "Madrid", "Berlin", "Tokyo", "Hanoi"],
          "ko": ["서울", "부산", "런던", "마드리드", "베를린", "도쿄"],
          "es": ["Madrid", "Sevilla", "Seúl", "Londres", "Berlín", "Tokio"],
          "de": ["Berlin", "München", "Seoul", "London", "Madrid", "Tokio"],
          "ja": ["東京", "大阪", "ソウル", "ロンドン", "マドリード", "ハノイ"],
          "vi": ["Hà Nội", "Huế", "Đà Nẵng", "Seoul", "Tokyo", "Luân Đôn"]}

PHRASINGS = {
    "count": {
        "en": [
            "Name exactly {n} {cat}, separated by commas.",
            "List {n} {cat} (exactly {n}), comma-separated, nothing else.",
            "Give me exactly {n} {cat} as a comma-separated list.",
        ],
        "ko": [
            "{cat_eul} 정확히 {n}개, 쉼표로 구분해서 말해 주세요.",
            "{cat} {n}가지를 쉼표로 구분해 나열하세요. 정확히 {n}개만 쓰세요.",
            "정확히 {n}개의 {cat} 이름을 쉼표로 이어서 써 주세요.",
        ],
        "es": [
            "Nombra exactamente {n} {cat} en una lista separada por comas.",
            "Enumera {n} {cat} (exactamente {n}) con comas entre ellos y nada más.",
            "Dame exactamente {n} {cat} en una lista separada por comas.",
        ],
        "de": [
            "Nenne genau {n} {cat}, durch Kommas getrennt.",
            "Zähle {n} {cat} auf (genau {n}), mit Kommas getrennt, sonst nichts.",
            "Gib mir genau {n} {cat} als kommagetrennte Liste.",
        ],
        "ja": [
            "{cat}をちょうど{n}つ、読点で区切って挙げてください。",
            "{cat}の名前を{n}個（ちょうど{n}個）、「、」で区切って書いてください。",
            "{cat}をきっかり{n}つ、区切って並べてください。",
        ],
        "vi": [
            "Hãy kể tên đúng {n} {cat}, cách nhau bằng dấu phẩy.",
            "Liệt kê {n} {cat} (đúng {n}), ngăn cách bằng dấu phẩy, không viết gì thêm.",
            "Cho tôi đúng {n} {cat} dưới dạng danh sách cách nhau bởi dấu phẩy.",
        ],
    },
    "include": {
        "en": [
            "Name exactly {n} {cat}, separated by commas. One of them must be {kw}.",
            "List exactly {n} {cat}, comma-separated, and include {kw}.",
        ],
        "ko": [
            "{cat_eul} 정확히 {n}개 쉼표로 구분해 쓰세요. 그중 하나는 반드시 {kw_ieoya} 합니다.",
            "{kw_reul} 포함해서 {cat} 정확히 {n}개를 쉼표로 나열하세요.",
        ],
        "es": [
            "Nombra exactamente {n} {cat} en una lista separada por comas. En la lista debe estar {kw}.",
            "Escribe una lista de exactamente {n} {cat}, separada por comas, que incluya {kw}.",
        ],
        "de": [
            "Nenne genau {n} {cat}, durch Kommas getrennt. Eines davon muss {kw} sein.",
            "Zähle genau {n} {cat} mit Kommas getrennt auf und nimm {kw} mit auf.",
        ],
        "ja": [
            "{cat}をちょうど{n}つ、読点で区切って挙げてください。その中に必ず{kw}を入れてください。",
            "{kw}を含めて、{cat}をちょうど{n}つ区切って並べてください。",
        ],
        "vi": [
            "Hãy kể tên đúng {n} {cat}, cách nhau bằng dấu phẩy. Một trong số đó phải là {kw}.",
            "Liệt kê đúng {n} {cat}, ngăn cách bằng dấu phẩy, và phải có {kw}.",
        ],
    },
    "avoid": {
        "en": [
            "Name exactly {n} {cat}, separated by commas, but do not mention {kw}.",
            "List exactly {n} {cat}, comma-separated; {kw} must not appear.",
        ],
        "ko": [
            "{cat_eul} 정확히 {n}개 쉼표로 구분해 쓰되, {kw_neun} 빼 주세요.",
            "{kw_neun} 절대 쓰지 말고 {cat} 정확히 {n}개를 쉼표로 나열하세요.",
        ],
        "es": [
            "Nombra exactamente {n} {cat} en una lista separada por comas, pero no menciones {kw}.",
            "Escribe una lista de exactamente {n} {cat}, separada por comas; {kw} no debe aparecer.",
        ],
        "de": [
            "Nenne genau {n} {cat}, durch Kommas getrennt, aber erwähne {kw} nicht.",
            "Zähle genau {n} {cat} mit Kommas getrennt auf; {kw} darf nicht vorkommen.",
        ],
        "ja": [
            "{cat}をちょうど{n}つ、読点で区切って挙げてください。ただし{kw}は使わないでください。",
            "{kw}以外の{cat}をちょうど{n}つ、区切って並べてください。",
        ],
        "vi": [
            "Hãy kể tên đúng {n} {cat}, cách nhau bằng dấu phẩy, nhưng không được nhắc đến {kw}.",
            "Liệt kê đúng {n} {cat}, ngăn cách bằng dấu phẩy; không được có {kw}.",
        ],
    },
    "json": {
        "en": [
            "{fact} Return only a JSON object with exactly the keys {keys}.",
            "Put this into JSON with the keys {keys} and no others: {fact}",
        ],
        "ko": [
            "{fact} 키가 정확히 {keys}인 JSON 객체만 출력하세요.",
            "다음 내용을 {keys} 키만 가진 JSON으로 바꾸세요: {fact}",
        ],
        "es": [
            "{fact} Devuelve solo un objeto JSON con exactamente las claves {keys}.",
            "Pon esto en JSON con las claves {keys} y ninguna más: {fact}",
        ],
        "de": [
            "{fact} Gib nur ein JSON-Objekt mit genau den Schlüsseln {keys} zurück.",
            "Schreib das als JSON mit den Schlüsseln {keys} und keinen anderen: {fact}",
        ],
        "ja": [
            "{fact} キーがちょうど{keys}のJSONオブジェクトだけを出力してください。",
            "次の内容を、キー{keys}だけを持つJSONにしてください：{fact}",
        ],
        "vi": [
            "{fact} Chỉ trả về một đối tượng JSON có đúng các khóa {keys}.",
            "Hãy chuyển nội dung sau thành JSON với các khóa {keys} và không có khóa nào khác: {fact}",
        ],
    },
    "words": {  # Japanese counts characters (文字数), Vietnamese written syllables (chữ): the rules those languages use
        "en": [
            "Write one sentence about {topic} in exactly {n} words.",
            "Say something about {topic} using exactly {n} words, in one sentence.",
        ],
        "ko": [
            "{topic}에 대해 정확히 {n}개의 단어(띄어쓰기 기준)로 된 한 문장을 쓰세요.",
            "{topic}에 관한 문장 하나를 딱 {n}단어로 써 주세요.",
        ],
        "es": [
            "Escribe una frase sobre {topic} con exactamente {n} palabras.",
            "Di algo sobre {topic} en una sola frase de exactamente {n} palabras.",
        ],
        "de": [
            "Schreib einen Satz über {topic} mit genau {n} Wörtern.",
            "Sag in einem Satz aus genau {n} Wörtern etwas über {topic}.",
        ],
        "ja": [
            "{topic}について、句読点を除いてちょうど{n}文字の文を一つ書いてください。",
            "{topic}に関する一文を、ちょうど{n}文字（句読点を除く）で書いてください。",
        ],
        "vi": [
            "Hãy viết một câu về {topic} gồm đúng {n} chữ.",
            "Nói một điều về {topic} trong một câu có đúng {n} chữ.",
        ],
    },
    "language": {
        "en": [
            "Write one sentence about {topic} in {language}.",
            "Answer in {language} only: say something about {topic} in one sentence.",
        ],
        "ko": [
            "{topic}에 대해 {language}로 한 문장을 쓰세요.",
            "{language}로만 답하세요: {topic}에 관해 한 문장으로 말해 주세요.",
        ],
        "es": [
            "Escribe una frase sobre {topic} en {language}.",
            "Responde solo en {language}: di algo sobre {topic} en una frase.",
        ],
        "de": [
            "Schreib einen Satz über {topic} auf {language}.",
            "Antworte nur auf {language}: Sag in einem Satz etwas über {topic}.",
        ],
        "ja": [
            "{topic}について{language}で一文書いてください。",
            "{language}だけで答えてください：{topic}について一文で述べてください。",
        ],
        "vi": [
            "Hãy viết một câu về {topic} bằng {language}.",
            "Chỉ trả lời bằng {language}: hãy nói một câu về {topic}.",
        ],
    },
}
FACTS = {  # the json kind's facts: name, age, city
    "en": "{name} is {age} years old and lives in {city}.", "ko": "{name_eun} {age}살이고 {city}에 삽니다.",
    "es": "{name} tiene {age} años y vive en {city}.", "de": "{name} ist {age} Jahre alt und wohnt in {city}.",
    "ja": "{name}さんは{age}歳で、{city}に住んでいます。", "vi": "{name} {age} tuổi và sống ở {city}.",
}
_LIST_SPLIT = re.compile(r"[,，、;；\n]+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def list_items(text: str) -> list[str]:
    """The items of a comma-separated (or one-per-line, bulleted) list, undecorated."""
    return [s for s in (plain(_BULLET.sub("", part)) for part in _LIST_SPLIT.split(text)) if s]


def _mentions(text: str, word: str) -> bool:
    """`word` occurs in `text` as a whole word (case-insensitive)."""
    return re.search(r"(?<!\w)" + re.escape(word.casefold()) + r"(?!\w)", text.casefold()) is not None


_PUNCT = re.compile(r"[\s\W_]+")


def length(text: str, lang: str) -> int:
    """Words of a text (whitespace-separated, punctuation-only tokens ignored); for Japanese, its
    characters without punctuation and spaces."""
    if lang == "ja":
        return len(_PUNCT.sub("", text))
    return sum(1 for w in text.split() if _PUNCT.sub("", w))


@lru_cache(maxsize=1)
def _detector():
    from lingua import Language, LanguageDetectorBuilder

    langs = {"ko": Language.KOREAN, "en": Language.ENGLISH, "es": Language.SPANISH, "de": Language.GERMAN,
             "ja": Language.JAPANESE, "vi": Language.VIETNAMESE}
    return LanguageDetectorBuilder.from_languages(*langs.values()).build(), {v: k for k, v in langs.items()}


def detect_language(text: str) -> str | None:
    """The language of `text` among the six (lingua), or None when it cannot tell."""
    detector, code = _detector()
    found = detector.detect_language_of(text)
    return code.get(found) if found is not None else None


class Instruct(Task):
    name = "instruct"
    tiers = (1, 2)

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        kind = rng.choice(["count", "words", "json", "language"] if tier == 1 else ["include", "avoid"])
        if kind in ("count", "include", "avoid"):
            cat = rng.choice(sorted(CATEGORIES))
            cat_name, bank = CATEGORIES[cat][lang]
            n = rng.randint(2, 6)
            kw = rng.choice(bank)
            pool = [w for w in bank if w != kw]
            items = rng.sample(pool, n)
            if kind == "include":
                items[rng.randrange(n)] = kw
            text = pick(rng, PHRASINGS[kind], lang, n=n, cat=cat_name, kw=kw, cat_eul=josa(cat_name, "을"),
                        kw_reul=josa(kw, "를"), kw_neun=josa(kw, "는"),
                        kw_ieoya=kw + ("이어야" if particle_for(kw, "이") == "이" else "여야"))
            answer = ("、" if lang == "ja" else ", ").join(items)
            steps = [f"{i + 1}. {w}" for i, w in enumerate(items)]
            rule = {"count": f"exactly {n} items", "include": f"exactly {n} items, {kw} among them",
                    "avoid": f"exactly {n} items, never {kw}"}[kind]
            reasoning = f"Rule: {rule}, comma-separated.\n" + "\n".join(steps) + f"\nThat is {n} items."
            key = f"instruct:{kind}:{cat}:{n}:{kw if kind != 'count' else ''}"
            return Example(user(text), answer, reasoning, {"key": key, "kind": kind, "n": n, "kw": kw})
        if kind == "json":
            name, age, city = rng.choice(PEOPLE[lang]), rng.randint(18, 90), rng.choice(CITIES[lang])
            keys = ["name", "age", "city"]
            rng.shuffle(keys)
            obj = {"name": name, "age": age, "city": city}
            obj = {k: obj[k] for k in keys}
            fact = FACTS[lang].format(name=name, age=age, city=city, name_eun=josa(name, "은"))
            shown = ", ".join(f'"{k}"' for k in keys)
            text = pick(rng, PHRASINGS["json"], lang, fact=fact, keys=shown)
            answer = json.dumps(obj, ensure_ascii=False)
            values = "\n".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in obj.items())
            meta = {"key": f"instruct:json:{name}:{age}:{city}", "kind": "json", "object": obj}
            return Example(user(text), answer, f"Keys required: {shown}.\n{values}", meta)
        if kind == "words":
            topic = rng.choice(sorted(SENTENCES))
            answer = rng.choice(SENTENCES[topic][lang])
            n = length(answer, lang)
            text = pick(rng, PHRASINGS["words"], lang, topic=TOPICS[topic][lang], n=n)
            unit = "characters without punctuation" if lang == "ja" else "words"
            rule = f"Rule: one sentence about {TOPICS[topic]['en']}, exactly {n} {unit}."
            meta = {"key": f"instruct:words:{topic}:{n}", "kind": "words", "n": n}
            return Example(user(text), answer, f"{rule}\n{answer}\nThat is {n} {unit}.", meta)
        target = rng.choice([x for x in self.langs if x != lang])
        topic = rng.choice(sorted(SENTENCES))
        answer = rng.choice(SENTENCES[topic][target])
        text = pick(rng, PHRASINGS["language"], lang, topic=TOPICS[topic][lang], language=LANGUAGE_NAMES[lang][target])
        language, about = LANGUAGE_NAMES["en"][target], TOPICS[topic]["en"]
        meta = {"key": f"instruct:language:{topic}:{target}", "kind": "language", "target": target, "topic": topic}
        reasoning = f"The reply must be written in {language}, one sentence about {about}."
        return Example(user(text), answer, reasoning, meta)

    def score(self, example: Example, content: str, reply) -> float:
        kind, meta = example.meta["kind"], example.meta
        if kind in ("count", "include", "avoid"):
            items = list_items(content)
            folded = [w.casefold() for w in items]
            ok = len(items) == meta["n"] and len(set(folded)) == len(folded)
            if kind == "include":
                ok = ok and meta["kw"].casefold() in folded
            if kind == "avoid":
                ok = ok and not _mentions(content, meta["kw"])
            return float(ok)
        if kind == "words":
            return float(length(content, meta["lang"]) == meta["n"])
        if kind == "json":
            start, end = content.find("{"), content.rfind("}")
            try:
                obj = json.loads(content[start:end + 1]) if start >= 0 else None
            except json.JSONDecodeError:
                return 0.0
            want = meta["object"]
            if not isinstance(obj, dict) or set(obj) != set(want):
                return 0.0
            return float(all(str(obj[k]).strip().casefold() == str(v).casefold() for k, v in want.items()))
        return float(detect_language(content) == meta["target"])

    def corrupt(self, example: Example, rng: random.Random) -> str:
        kind, meta = example.meta["kind"], example.meta
        lang = meta.get("lang", "en")
        sep = "、" if lang == "ja" else ", "
        if kind == "words":  # one word (character) too many or too few
            if lang == "ja":
                return example.answer[1:] if rng.random() < 0.5 else "今日" + example.answer
            words = example.answer.split()
            return " ".join(words[1:]) if rng.random() < 0.5 else " ".join(words[:1] + words)
        if kind in ("count", "include", "avoid"):
            items = example.answer.split(sep)
            if kind == "include":
                return sep.join(meta["kw"] + "x" if w == meta["kw"] else w for w in items)
            if kind == "avoid":
                return sep.join([meta["kw"]] + items[1:])
            return sep.join(items + ["x" + items[0]]) if rng.random() < 0.5 else sep.join(items[1:])
        if kind == "json":
            obj = dict(meta["object"])
            if rng.random() < 0.5:
                obj["extra"] = 1
            else:
                obj["age"] = obj["age"] + 1
            return json.dumps(obj, ensure_ascii=False)
        other = lang if lang != meta["target"] else "en"
        return SENTENCES[meta["topic"]][other][0]
