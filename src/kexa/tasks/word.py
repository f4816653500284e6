"""`word`: multi-step arithmetic word problems — a person, a stock of things, and a chain of events
(buying packs, giving away, receiving, losing, sharing equally), written natively per language with
its own names, items and counters.

Tiers: 1 two events after the start; 2 three events; 3 three events and an equal share at the end
(a division). The trace applies one event per line. Problem identity: the numbers and the events
(the same computation in another language or about another item is the same problem).
Reward: math-verify on the final number.
"""

from __future__ import annotations

import random

from .base import Example, Task, user
from .lang import NUMBER_ONLY, PEOPLE, particle_for
from .verify import math_equal

# items per language: (noun, counter (ko, ja) / gender (es) / dative plural (de))
ITEMS = {
    "en": [("apples", ""), ("pencils", ""), ("stickers", ""), ("cookies", "")],
    "ko": [("사과", "개"), ("연필", "자루"), ("스티커", "장"), ("쿠키", "개")],
    "es": [("manzanas", "f"), ("lápices", "m"), ("pegatinas", "f"), ("galletas", "f")],
    "de": [("Äpfel", "Äpfeln"), ("Bleistifte", "Bleistiften"), ("Aufkleber", "Aufklebern"), ("Kekse", "Keksen")],
    "ja": [("りんご", "個"), ("鉛筆", "本"), ("シール", "枚"), ("クッキー", "枚")],
    "vi": [("quả táo", ""), ("cây bút chì", ""), ("miếng nhãn dán", ""), ("cái bánh quy", "")],
}

# sentences per event; fields: p (person), n/k/m/g/r/u/q (numbers), it (item), c (counter), and the
# Korean particles p_eun (은/는), p_ga (이/가), it_ga, it_eul, c_eul (after the counter)
SENTENCES = {
    "en": {
        "start": ["{p} has {n} {it}.", "{p} starts with {n} {it}."],
        "buy": ["{p} buys {k} packs with {m} {it} in each pack.", "Then {p} buys {k} bags of {m} {it} each."],
        "give": ["{p} gives {g} {it} to a friend.", "Next, {p} gives away {g} {it}."],
        "recv": ["{p}'s grandmother gives {p} {r} more {it}.", "A neighbour gives {p} another {r} {it}."],
        "lose": ["{p} loses {u} {it}.", "On the way home, {p} loses {u} {it}."],
        "ask": ["How many {it} does {p} have now?", "How many {it} does {p} have in the end?"],
        "share": ["{p} shares all the {it} equally among {q} friends. How many {it} does each friend get?"],
    },
    "ko": {
        "start": ["{p_eun} {it} {n}{c_eul} 가지고 있습니다.", "{p}에게 {it} {n}{c_ga} 있습니다."],
        "buy": [
            "{p_ga} 한 봉지에 {m}{c}씩 든 {it} {k}봉지를 샀습니다.",
            "그다음 {p_eun} {it} {m}{c}짜리 묶음을 {k}개 샀습니다.",
        ],
        "give": ["{p_eun} 친구에게 {it} {g}{c_eul} 주었습니다.", "{p_eun} 동생에게 {it} {g}{c_eul} 나누어 주었습니다."],
        "recv": ["할머니께서 {p}에게 {it} {r}{c_eul} 더 주셨습니다.", "이웃이 {p}에게 {it} {r}{c_eul} 선물했습니다."],
        "lose": ["{p_eun} {it} {u}{c_eul} 잃어버렸습니다.", "집에 오는 길에 {p_eun} {it} {u}{c_eul} 잃어버렸습니다."],
        "ask": ["이제 {p}에게 {it_ga} 몇 {c} 있나요?", "{p_ga} 마지막에 가진 {it_eun} 몇 {c}인가요?"],
        "share": [
            "{p_eun} 가진 {it_eul} 친구 {q}명에게 똑같이 나누어 주었습니다. 친구 한 명이 받은 {it_eun} 몇 {c}인가요?"
        ],
    },
    "es": {
        "start": ["{p} tiene {n} {it}.", "{p} empieza con {n} {it}."],
        "buy": ["{p} compra {k} paquetes con {m} {it} cada uno.", "Luego {p} compra {k} bolsas de {m} {it}."],
        "give": ["{p} le regala {g} {it} a un amigo.", "Después, {p} regala {g} {it}."],
        "recv": [
            "Su abuela le da a {p} {r} {it} más.",
            "Un vecino le da a {p} otras {r} {it}.".replace("otras", "{otros}"),
        ],
        "lose": ["{p} pierde {u} {it}.", "De camino a casa, {p} pierde {u} {it}."],
        "ask": ["¿{Cuantos} {it} tiene {p} ahora?", "¿Con {cuantos} {it} se queda {p} al final?"],
        "share": [
            "{p} reparte todas sus {it} a partes iguales entre {q} amigos. ¿{Cuantos} {it} recibe cada amigo?".replace(
                "todas", "{todos}"
            )
        ],
    },
    "de": {
        "start": ["{p} hat {n} {it}.", "{p} besitzt {n} {it}."],
        "buy": ["{p} kauft {k} Packungen mit je {m} {it_dat}.", "Dann kauft {p} {k} Tüten mit jeweils {m} {it_dat}."],
        "give": ["{p} schenkt einem Freund {g} {it}.", "Danach verschenkt {p} {g} {it}."],
        "recv": ["Von der Oma bekommt {p} noch {r} {it} dazu.", "Eine Nachbarin schenkt {p} weitere {r} {it}."],
        "lose": ["{p} verliert {u} {it}.", "Auf dem Heimweg verliert {p} {u} {it}."],
        "ask": ["Wie viele {it} hat {p} jetzt?", "Wie viele {it} hat {p} am Ende?"],
        "share": ["{p} verteilt alle {it} gleichmäßig auf {q} Freunde. Wie viele {it} bekommt jeder Freund?"],
    },
    "ja": {
        "start": ["{p}さんは{it}を{n}{c}持っています。", "{p}さんのところに{it}が{n}{c}あります。"],
        "buy": [
            "{p}さんは{m}{c}入りの{it}の袋を{k}袋買いました。",
            "次に{p}さんは{it}を{m}{c}ずつ入ったパックで{k}パック買いました。",
        ],
        "give": ["{p}さんは友だちに{it}を{g}{c}あげました。", "それから{p}さんは{it}を{g}{c}弟にあげました。"],
        "recv": ["おばあさんから{it}を{r}{c}もらいました。", "近所の人が{p}さんに{it}を{r}{c}くれました。"],
        "lose": ["{p}さんは{it}を{u}{c}なくしました。", "帰り道で{p}さんは{it}を{u}{c}落としてしまいました。"],
        "ask": ["{p}さんは今、{it}を何{c}持っていますか？", "最後に{p}さんの{it}は何{c}になりましたか。"],
        "share": ["{p}さんは{it}を{q}人の友だちに同じ数ずつ分けました。一人あたり何{c}もらえますか？"],
    },
    "vi": {
        "start": ["{p} có {n} {it}.", "Lúc đầu {p} có {n} {it}."],
        "buy": ["{p} mua {k} túi, mỗi túi có {m} {it}.", "Sau đó {p} mua thêm {k} gói, mỗi gói {m} {it}."],
        "give": ["{p} cho bạn {g} {it}.", "Tiếp theo, {p} tặng em trai {g} {it}."],
        "recv": ["Bà cho {p} thêm {r} {it}.", "Một người hàng xóm tặng {p} thêm {r} {it}."],
        "lose": ["{p} làm mất {u} {it}.", "Trên đường về nhà, {p} đánh rơi {u} {it}."],
        "ask": ["Bây giờ {p} có bao nhiêu {it}?", "Cuối cùng {p} còn bao nhiêu {it}?"],
        "share": ["{p} chia đều số {it} cho {q} người bạn. Mỗi người bạn nhận được bao nhiêu {it}?"],
    },
}
EVENTS = ("buy", "give", "recv", "lose")


def _fields(lang: str, person: str, item: tuple[str, str]) -> dict[str, str]:
    noun, info = item
    f = {"p": person, "it": noun, "c": info if lang in ("ko", "ja") else ""}
    if lang == "ko":
        f.update(p_eun=person + particle_for(person, "은"), p_ga=person + particle_for(person, "가"),
                 it_ga=noun + particle_for(noun, "가"), it_eun=noun + particle_for(noun, "은"),
                 it_eul=noun + particle_for(noun, "을"), c_eul=info + particle_for(info, "을"),
                 c_ga=info + particle_for(info, "가"))
    if lang == "de":  # "mit je 12 Äpfeln": the dative plural
        f.update(it_dat=info)
    if lang == "es":
        fem = info == "f"
        f.update(Cuantos="Cuántas" if fem else "Cuántos", cuantos="cuántas" if fem else "cuántos",
                 otros="otras" if fem else "otros", todos="todas" if fem else "todos")
    return f


class Word(Task):
    name = "word"
    tiers = (1, 2, 3)

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        n_events = 2 if tier == 1 else 3
        while True:
            n = rng.randint(5, 60)
            total, events, trace = n, [], [f"start: {n}"]
            for _ in range(n_events):
                ev = rng.choice(EVENTS)
                if ev == "buy":
                    k, m = rng.randint(2, 6), rng.randint(2, 12)
                    events.append((ev, {"k": k, "m": m}))
                    trace.append(f"buy {k} packs of {m}: {k} × {m} = {k * m}; {total} + {k * m} = {total + k * m}")
                    total += k * m
                elif ev == "recv":
                    r = rng.randint(2, 30)
                    events.append((ev, {"r": r}))
                    trace.append(f"receive {r}: {total} + {r} = {total + r}")
                    total += r
                else:
                    if total < 4:
                        break
                    x = rng.randint(2, total - 2)
                    events.append((ev, {"g" if ev == "give" else "u": x}))
                    trace.append(f"{'give away' if ev == 'give' else 'lose'} {x}: {total} - {x} = {total - x}")
                    total -= x
            else:
                q = 0
                if tier == 3:
                    divisors = [d for d in range(2, 7) if total % d == 0 and total // d >= 2]
                    if not divisors:
                        continue
                    q = rng.choice(divisors)
                    trace.append(f"share equally among {q}: {total} ÷ {q} = {total // q}")
                    total //= q
                break
        f = _fields(lang, rng.choice(PEOPLE[lang]), rng.choice(ITEMS[lang]))
        S = SENTENCES[lang]
        parts = [rng.choice(S["start"]).format(n=n, **f)]
        parts += [rng.choice(S[ev]).format(**nums, **f) for ev, nums in events]
        parts.append(rng.choice(S["share"]).format(q=q, **f) if q else rng.choice(S["ask"]).format(**f))
        sep = "" if lang == "ja" else " "
        extra = rng.choice(NUMBER_ONLY[lang]).strip()
        if extra:
            parts[-1] += sep + extra
        key = f"word:{n}:" + ",".join(f"{ev}{sorted(v.items())}" for ev, v in events) + f":{q}"
        trace.append(f"answer: {total}")
        return Example(user(sep.join(parts)), str(total), "\n".join(trace), {"key": key})

    def score(self, example: Example, content: str, reply) -> float:
        return float(math_equal(example.answer, content))
