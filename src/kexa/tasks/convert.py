"""`convert`: unit and date conversion.

Tiers: 1 a whole number of a larger unit into a smaller one (km → m, h → min, …); 2 back into the
larger unit (2,500 m → 2.5 km) or Celsius into Fahrenheit; 3 the date N days after a given date
(answer `YYYY-MM-DD`); 4 the day of the week of a date. Traces: the multiplication or division by the
factor; the walk through the months; the day count from a known Saturday (2000-01-01).
Problem identity: the conversion and its number, or the date and offset.
Reward: numbers by math-verify; a date: the one date in the reply equals the answer; a weekday: the
reply names exactly one weekday (in any of the six languages) and it is the right one.
(Like math-verify's last number, the last date of the reply is its answer.)
"""

from __future__ import annotations

import datetime as dt
import random
import re
import unicodedata

from .base import Example, Task, pick, user
from .lang import NUMBER_ONLY, particle_for
from .verify import math_equal

# unit -> name per language (Korean and Japanese write unit words; the others use symbols for metric)
UNITS = {
    "km": {"en": "km", "es": "km", "de": "km", "vi": "km", "ja": "km", "ko": "킬로미터"},
    "m": {"en": "m", "es": "m", "de": "m", "vi": "m", "ja": "m", "ko": "미터"},
    "cm": {"en": "cm", "es": "cm", "de": "cm", "vi": "cm", "ja": "cm", "ko": "센티미터"},
    "kg": {"en": "kg", "es": "kg", "de": "kg", "vi": "kg", "ja": "kg", "ko": "킬로그램"},
    "g": {"en": "g", "es": "g", "de": "g", "vi": "g", "ja": "g", "ko": "그램"},
    "L": {"en": "L", "es": "L", "de": "L", "vi": "lít", "ja": "リットル", "ko": "리터"},
    "mL": {"en": "mL", "es": "mL", "de": "mL", "vi": "mL", "ja": "ミリリットル", "ko": "밀리리터"},
    "h": {"en": "hours", "es": "horas", "de": "Stunden", "vi": "giờ", "ja": "時間", "ko": "시간"},
    "min": {"en": "minutes", "es": "minutos", "de": "Minuten", "vi": "phút", "ja": "分", "ko": "분"},
    "s": {"en": "seconds", "es": "segundos", "de": "Sekunden", "vi": "giây", "ja": "秒", "ko": "초"},
    "day": {"en": "days", "es": "días", "de": "Tage", "vi": "ngày", "ja": "日", "ko": "일"},
}
FACTORS = [("km", "m", 1000), ("m", "cm", 100), ("kg", "g", 1000), ("L", "mL", 1000), ("h", "min", 60),
           ("min", "s", 60), ("day", "h", 24)]

PHRASINGS = {
    "unit": {
        "en": [
            "How many {to} are in {x} {frm}?",
            "Convert {x} {frm} to {to}.",
            "{x} {frm} = ___ {to}.",
            "Express {x} {frm} in {to}.",
            "What is {x} {frm} in {to}?",
        ],
        "ko": [
            "{x} {frm_eun} 몇 {to}인가요?",
            "{x} {frm_eul} {to_ro} 바꾸세요.",
            "{x} {frm} = ___ {to}.",
            "{x} {frm_eul} {to} 단위로 나타내면?",
            "{x} {frm_eun} {to_ro} 환산하면 얼마인가요?",
        ],
        "es": [
            "¿{Cuantos} {to} hay en {x} {frm}?",
            "Convierte {x} {frm} a {to}.",
            "{x} {frm} = ___ {to}.",
            "Expresa {x} {frm} en {to}.",
            "¿A {cuantos} {to} equivalen {x} {frm}?",
        ],
        "de": [
            "Wie viele {to} sind {x} {frm}?",
            "Rechne {x} {frm} in {to} um.",
            "{x} {frm} = ___ {to}.",
            "Gib {x} {frm} in {to} an.",
            "Wie viel sind {x} {frm} in {to}?",
        ],
        "ja": [
            "{x}{frm}は何{to}ですか？",
            "{x}{frm}を{to}に換算してください。",
            "{x} {frm} = ___ {to}.",
            "{x}{frm}を{to}で表すといくつですか。",
        ],
        "vi": [
            "{x} {frm} bằng bao nhiêu {to}?",
            "Đổi {x} {frm} sang {to}.",
            "{x} {frm} = ___ {to}.",
            "Hãy biểu diễn {x} {frm} theo đơn vị {to}.",
            "{x} {frm} là bao nhiêu {to}?",
        ],
    },
    "temp": {
        "en": [
            "What is {c} °C in degrees Fahrenheit?",
            "Convert {c} °C to °F.",
            "{c} degrees Celsius is how many degrees Fahrenheit?",
        ],
        "ko": ["섭씨 {c}도는 화씨 몇 도인가요?", "섭씨 {c}도를 화씨로 바꾸세요.", "{c}°C를 화씨 온도로 나타내면?"],
        "es": [
            "¿Cuántos grados Fahrenheit son {c} °C?",
            "Convierte {c} °C a °F.",
            "Pasa {c} grados Celsius a Fahrenheit.",
        ],
        "de": [
            "Wie viel Grad Fahrenheit sind {c} °C?",
            "Rechne {c} °C in °F um.",
            "{c} Grad Celsius sind wie viel Grad Fahrenheit?",
        ],
        "ja": ["{c}℃は華氏何度ですか？", "摂氏{c}度を華氏に換算してください。", "{c}°Cを°Fで表すといくつですか。"],
        "vi": ["{c} °C bằng bao nhiêu độ F?", "Đổi {c} °C sang độ F.", "{c} độ C là bao nhiêu độ F?"],
    },
    "date": {
        "en": [
            "What date is {n} days after {d}? Answer as YYYY-MM-DD.",
            "Add {n} days to {d} (format YYYY-MM-DD).",
            "If today is {d}, what is the date in {n} days? Use YYYY-MM-DD.",
        ],
        "ko": [
            "{d}부터 {n}일 후는 몇 년 몇 월 며칠인가요? YYYY-MM-DD 형식으로 답하세요.",
            "{d}에 {n}일을 더한 날짜를 YYYY-MM-DD 형식으로 쓰세요.",
            "오늘 날짜: {d}. {n}일 뒤의 날짜는? (YYYY-MM-DD)",
        ],
        "es": [
            "¿Qué fecha es {n} días después del {d}? Responde en formato AAAA-MM-DD.",
            "Suma {n} días a {d} (formato AAAA-MM-DD).",
            "Si hoy es {d}, ¿qué fecha será dentro de {n} días? Usa AAAA-MM-DD.",
        ],
        "de": [
            "Welches Datum ist {n} Tage nach dem {d}? Antworte im Format JJJJ-MM-TT.",
            "Addiere {n} Tage zu {d} (Format JJJJ-MM-TT).",
            "Wenn heute der {d} ist, welches Datum ist in {n} Tagen? Format JJJJ-MM-TT.",
        ],
        "ja": [
            "{d}の{n}日後は何日ですか？YYYY-MM-DD形式で答えてください。",
            "{d}に{n}日を足した日付をYYYY-MM-DDで書いてください。",
            "今日が{d}なら、{n}日後の日付は？（YYYY-MM-DD）",
        ],
        "vi": [
            "Ngày nào là {n} ngày sau {d}? Trả lời theo dạng YYYY-MM-DD.",
            "Cộng {n} ngày vào {d} (định dạng YYYY-MM-DD).",
            "Nếu hôm nay là {d} thì {n} ngày nữa là ngày nào? Dùng YYYY-MM-DD.",
        ],
    },
    "weekday": {
        "en": ["What day of the week was {d}?", "Which weekday is {d}?", "On what day of the week does {d} fall?"],
        "ko": ["{d}은 무슨 요일인가요?", "{d}의 요일을 구하세요.", "{d}은 어떤 요일이었나요?"],
        "es": [
            "¿Qué día de la semana fue el {d}?",
            "¿En qué día de la semana cae el {d}?",
            "¿Qué día de la semana es {d}?",
        ],
        "de": ["Welcher Wochentag war der {d}?", "Auf welchen Wochentag fällt der {d}?", "Welcher Wochentag ist {d}?"],
        "ja": ["{d}は何曜日ですか？", "{d}の曜日を答えてください。", "{d}は何曜日でしたか。"],
        "vi": ["Ngày {d} là thứ mấy?", "{d} rơi vào thứ mấy trong tuần?", "Hãy cho biết {d} là thứ mấy."],
    },
}
WEEKDAYS = {  # Monday first, like date.weekday()
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "ko": ["월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일"],
    "es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
    "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
    "ja": ["月曜日", "火曜日", "水曜日", "木曜日", "金曜日", "土曜日", "日曜日"],
    "vi": ["thứ Hai", "thứ Ba", "thứ Tư", "thứ Năm", "thứ Sáu", "thứ Bảy", "Chủ nhật"],
}
ANCHOR = dt.date(2000, 1, 1)  # a Saturday
_DATE = re.compile(r"(\d{4})\s*-\s*(\d{1,2})\s*-\s*(\d{1,2})")


def _num(x: float) -> str:
    return f"{x:g}"


def date_trace(d: dt.date, n: int) -> str:
    """Walk forward month by month until the offset is used up."""
    lines, cur, left = [f"start {d.isoformat()}, {n} days to add"], d, n
    while left > 0:
        nxt = (cur.replace(day=1) + dt.timedelta(days=32)).replace(day=1)  # first of next month
        to_next = (nxt - cur).days
        if left >= to_next:
            lines.append(f"{to_next} days to {nxt.isoformat()}, {left - to_next} left")
            cur, left = nxt, left - to_next
        else:
            cur = cur + dt.timedelta(days=left)
            lines.append(f"{left} more days: {cur.isoformat()}")
            left = 0
    return "\n".join(lines)


def _weekday_key(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


class Convert(Task):
    name = "convert"
    tiers = (1, 2, 3, 4)

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        if tier in (1, 2):
            if tier == 2 and rng.random() < 0.25:
                c = 5 * rng.randint(-8, 20)
                f = c * 9 // 5 + 32
                trace = f"F = C × 9/5 + 32 = {c} × 9/5 + 32 = {c * 9 // 5} + 32 = {f}"
                text = pick(rng, PHRASINGS["temp"], lang, c=c)
                text += rng.choice(NUMBER_ONLY[lang])
                return Example(user(text), str(f), trace, {"key": f"convert:C>F:{c}", "kind": "unit"})
            else:
                big, small, k = rng.choice(FACTORS)
                if tier == 1:
                    frm, to, x = big, small, rng.randint(2, 99)
                    y = x * k
                    trace = f"1 {big} = {k} {small}\n{x} × {k} = {y}"
                else:
                    y = rng.randint(1, 40) / 4
                    frm, to, x = small, big, int(y * k)
                    trace = f"1 {big} = {k} {small}\n{x} ÷ {k} = {_num(y)}"
            U = {u: UNITS[u][lang] for u in (frm, to)}
            text = pick(rng, PHRASINGS["unit"], lang, x=x, frm=U[frm], to=U[to],
                        frm_eun=U[frm] + particle_for(U[frm], "은"), frm_eul=U[frm] + particle_for(U[frm], "을"),
                        to_ro=U[to] + particle_for(U[to], "로"),
                        Cuantos="Cuántas" if to == "h" else "Cuántos", cuantos="cuántas" if to == "h" else "cuántos")
            text += rng.choice(NUMBER_ONLY[lang])
            return Example(user(text), _num(y), trace, {"key": f"convert:{frm}>{to}:{x}", "kind": "unit"})
        d = ANCHOR + dt.timedelta(days=rng.randint(0, 365 * 30))
        if tier == 3:
            n = rng.randint(1, 400)
            out = d + dt.timedelta(days=n)
            text = pick(rng, PHRASINGS["date"], lang, d=d.isoformat(), n=n)
            meta = {"key": f"convert:date:{d}+{n}", "kind": "date"}
            return Example(user(text), out.isoformat(), date_trace(d, n), meta)
        days = (d - ANCHOR).days
        wd = d.weekday()
        trace = (f"2000-01-01 was a Saturday. From 2000-01-01 to {d.isoformat()} is {days} days.\n"
                 f"{days} mod 7 = {days % 7}; Saturday + {days % 7} days = {WEEKDAYS['en'][wd]}")
        text = pick(rng, PHRASINGS["weekday"], lang, d=d.isoformat())
        meta = {"key": f"convert:weekday:{d}", "kind": "weekday", "weekday": wd}
        return Example(user(text), WEEKDAYS[lang][wd], trace, meta)

    def score(self, example: Example, content: str, reply) -> float:
        kind = example.meta["kind"]
        if kind == "unit":
            return float(math_equal(example.answer, content))
        if kind == "date":
            dates = [tuple(map(int, m)) for m in _DATE.findall(content)]  # the last date is the answer
            return float(bool(dates) and dates[-1] == tuple(map(int, example.answer.split("-"))))
        text = _weekday_key(content)
        named = {i for names in WEEKDAYS.values() for i, w in enumerate(names) if _weekday_key(w) in text}
        return float(named == {example.meta["weekday"]})

    def corrupt(self, example: Example, rng: random.Random) -> str:
        kind = example.meta["kind"]
        if kind == "weekday":
            wd = (example.meta["weekday"] + rng.randint(1, 6)) % 7
            return WEEKDAYS[example.meta.get("lang", "en")][wd]
        if kind == "date":
            d = dt.date.fromisoformat(example.answer) + dt.timedelta(days=rng.choice([-1, 1, 30, -30]))
            return d.isoformat()
        return super().corrupt(example, rng)
