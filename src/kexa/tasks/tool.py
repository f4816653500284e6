"""`tool`: tool-use dialogues in the chat template's tool format — a declared tool, the assistant's call,
the tool's result, the final answer.

Tools (OpenAI function schema, rendered by the template under `<|tool_declare|>`): `get_weather(city,
date)`, `convert_currency(amount, from, to)`, `calculator(expression)`. The question needs what only
the tool knows (a forecast, an exchange rate) or a product too long to do by heart.
Tiers: 1 the one needed tool is declared and the reply must call it; 2 all three are declared (pick the
right one); 3 the dialogue already holds the call and its result and the reply is the final answer.
For tiers 1–2 the answer is the expected `<tool_call>{"name": …, "arguments": …}</tool_call>` and
`ex.after` holds the tool result and the final reply, so `ex.conversation()` is the whole dialogue.
Reward: tiers 1–2 — the reply makes exactly one call, to the right tool, with arguments equal to the
expected ones (city in any of its six spellings, numbers by value, an expression by its value);
tier 3 — the final number by math-verify.
Problem identity: the tool and its arguments.
"""

from __future__ import annotations

import ast
import json
import operator
import random
import re

from .base import Example, Task, pick, user
from .lang import josa, particle_for
from .verify import math_equal

TOOLS = {
    "get_weather": {"type": "function", "function": {
        "name": "get_weather", "description": "Weather forecast for a city on a given date.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "date": {"type": "string", "description": "Date as YYYY-MM-DD"}}, "required": ["city", "date"]}}},
    "convert_currency": {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount of money at today's exchange rate.",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number", "description": "Amount to convert"},
            "from": {"type": "string", "description": "ISO currency code to convert from, e.g. USD"},
            "to": {"type": "string", "description": "ISO currency code to convert to, e.g. KRW"}},
            "required": ["amount", "from", "to"]}}},
    "calculator": {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression with + - * / and parentheses.",
        "parameters": {"type": "object", "properties": {
            "expression": {"type": "string", "description": "The expression, e.g. 12 * (3 + 4)"}},
            "required": ["expression"]}}},
}
CITIES = [  # en, ko, es, de, ja, vi
    ("Seoul", "서울", "Seúl", "Seoul", "ソウル", "Seoul"), ("Busan", "부산", "Busan", "Busan", "釜山", "Busan"),
    ("Tokyo", "도쿄", "Tokio", "Tokio", "東京", "Tokyo"), ("Osaka", "오사카", "Osaka", "Osaka", "大阪", "Osaka"),
    ("London", "런던", "Londres", "London", "ロンドン", "Luân Đôn"), ("Paris", "파리", "París", "Paris", "パリ", "Paris"),
    ("Madrid", "마드리드", "Madrid", "Madrid", "マドリード", "Madrid"), ("Berlin", "베를린", "Berlín", "Berlin", "ベルリン", "Berlin"),
    ("Munich", "뮌헨", "Múnich", "München", "ミュンヘン", "Munich"), ("Hanoi", "하노이", "Hanói", "Hanoi", "ハノイ", "Hà Nội"),
    ("New York", "뉴욕", "Nueva York", "New York", "ニューヨーク", "New York"),
    ("Mexico City", "멕시코시티", "Ciudad de México", "Mexiko-Stadt", "メキシコシティ", "Thành phố Mexico"),
]
_LANG_INDEX = {"en": 0, "ko": 1, "es": 2, "de": 3, "ja": 4, "vi": 5}
CONDITIONS = {
    "en": ["sunny", "cloudy", "rainy", "snowy"],
    "ko": ["맑음", "흐림", "비", "눈"],
    "es": ["soleado", "nublado", "lluvioso", "con nieve"],
    "de": ["sonnig", "bewölkt", "regnerisch", "verschneit"],
    "ja": ["晴れ", "くもり", "雨", "雪"],
    "vi": ["nắng", "nhiều mây", "mưa", "có tuyết"],
}
CURRENCIES = ["USD", "EUR", "KRW", "JPY", "VND", "GBP"]

PHRASINGS = {
    "get_weather": {
        "en": [
            "What will the weather be like in {city} on {date}?",
            "Check the forecast for {city} on {date}.",
            "How warm will it be in {city} on {date}?",
        ],
        "ko": [
            "{date}에 {city}의 날씨는 어떨까요?",
            "{city}의 {date} 일기 예보를 확인해 주세요.",
            "{date}에 {city}{eun} 몇 도일까요?",
        ],
        "es": [
            "¿Qué tiempo hará en {city} el {date}?",
            "Consulta el pronóstico para {city} el {date}.",
            "¿Cuánta temperatura hará en {city} el {date}?",
        ],
        "de": [
            "Wie wird das Wetter in {city} am {date}?",
            "Schau nach der Vorhersage für {city} am {date}.",
            "Wie warm wird es am {date} in {city}?",
        ],
        "ja": [
            "{date}の{city}の天気はどうですか？",
            "{city}の{date}の天気予報を調べてください。",
            "{date}、{city}は何度になりますか？",
        ],
        "vi": [
            "Thời tiết ở {city} vào ngày {date} thế nào?",
            "Hãy xem dự báo thời tiết ở {city} ngày {date}.",
            "Ngày {date} ở {city} nhiệt độ bao nhiêu?",
        ],
    },
    "convert_currency": {
        "en": [
            "How much is {amount} {frm} in {to}?",
            "Convert {amount} {frm} to {to} at today's rate.",
            "I have {amount} {frm}. How many {to} is that?",
        ],
        "ko": [
            "{amount} {frm}{eun} {to}로 얼마인가요?",
            "오늘 환율로 {amount} {frm}{eul} {to}로 바꿔 주세요.",
            "{amount} {frm}{ga} 있어요. {to}로 얼마예요?",
        ],
        "es": [
            "¿Cuánto son {amount} {frm} en {to}?",
            "Convierte {amount} {frm} a {to} al cambio de hoy.",
            "Tengo {amount} {frm}. ¿Cuánto es eso en {to}?",
        ],
        "de": [
            "Wie viel sind {amount} {frm} in {to}?",
            "Rechne {amount} {frm} zum heutigen Kurs in {to} um.",
            "Ich habe {amount} {frm}. Wie viel {to} sind das?",
        ],
        "ja": [
            "{amount} {frm}は{to}でいくらですか？",
            "今日のレートで{amount} {frm}を{to}に換算してください。",
            "{amount} {frm}持っています。{to}にするといくらですか？",
        ],
        "vi": [
            "{amount} {frm} bằng bao nhiêu {to}?",
            "Đổi {amount} {frm} sang {to} theo tỷ giá hôm nay.",
            "Tôi có {amount} {frm}. Như vậy là bao nhiêu {to}?",
        ],
    },
    "calculator": {
        "en": ["Use the calculator to compute {a} × {b}.", "What is {a} × {b}? Use a tool to be exact."],
        "ko": ["계산기로 {a} × {b_reul} 계산해 주세요.", "{a} × {b_eun} 얼마인가요? 정확하게 도구를 써서 계산하세요."],
        "es": [
            "Usa la calculadora para calcular {a} × {b}.",
            "¿Cuánto es {a} × {b}? Usa una herramienta para ser exacto.",
        ],
        "de": [
            "Berechne {a} × {b} mit dem Taschenrechner.",
            "Was ist {a} × {b}? Nimm ein Werkzeug, damit es genau ist.",
        ],
        "ja": [
            "電卓を使って{a} × {b}を計算してください。",
            "{a} × {b}はいくつですか？正確にするためにツールを使ってください。",
        ],
        "vi": ["Dùng máy tính để tính {a} × {b}.", "{a} × {b} bằng bao nhiêu? Hãy dùng công cụ để tính cho chính xác."],
    },
}
FINAL = {  # the final reply, the checked number last
    "get_weather": {"en": "{city}, {date}: {cond}, {t} °C.", "ko": "{date} {city}: {cond}, {t}°C입니다.",
                    "es": "{city}, {date}: {cond}, {t} °C.", "de": "{city}, {date}: {cond}, {t} °C.",
                    "ja": "{date}の{city}は{cond}、{t}°Cです。", "vi": "{city}, ngày {date}: {cond}, {t} °C."},
    "convert_currency": {lang: "{amount} {frm} = {x} {to}" for lang in _LANG_INDEX},
    "calculator": {lang: "{a} × {b} = {x}" for lang in _LANG_INDEX},
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expression: str) -> float | None:
    """The value of an arithmetic expression (numbers, + - * /, parentheses), or None if it is not one."""
    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        raise ValueError(node)

    try:
        return ev(ast.parse(str(expression).replace("×", "*").replace("÷", "/"), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError, RecursionError):
        return None


def call_text(name: str, arguments: dict) -> str:
    """A tool call as the chat template renders it."""
    args = json.dumps(arguments, ensure_ascii=False)
    return f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {args}}}</tool_call>'


def _same_number(x, y) -> bool:
    try:
        return abs(float(x) - float(y)) < 1e-9
    except (TypeError, ValueError):
        return False


class ToolUse(Task):
    name = "tool"
    tiers = (1, 2, 3)

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        tool = rng.choice(sorted(TOOLS))
        if tool == "get_weather":
            city = rng.choice(CITIES)
            name = city[_LANG_INDEX[lang]]
            date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            args = {"city": name, "date": date}
            t, c = rng.randint(-10, 35), rng.randrange(4)
            result = {"city": name, "date": date, "temperature_c": t, "condition": CONDITIONS["en"][c]}
            fields = {"city": name, "date": date, "eun": particle_for(name, "은")}
            final = FINAL[tool][lang].format(city=name, date=date, cond=CONDITIONS[lang][c], t=t)
            target, check = str(t), {"city": list(city), "date": date}
            key = f"tool:weather:{city[0]}:{date}"
            why = f"The forecast for {name} on {date} is not something I know; get_weather gives it."
        elif tool == "convert_currency":
            frm, to = rng.sample(CURRENCIES, 2)
            amount = rng.choice([rng.randint(2, 999), 10 * rng.randint(1, 500)])
            if frm in ("KRW", "JPY", "VND"):  # amounts worth converting in small-unit currencies
                amount *= 1000
            rate = round(rng.uniform(0.5, 2.0) * {"KRW": 1300, "JPY": 150, "VND": 25000}.get(to, 1)
                         / {"KRW": 1300, "JPY": 150, "VND": 25000}.get(frm, 1), 6)
            x = round(amount * rate, 2)
            args = {"amount": amount, "from": frm, "to": to}
            result = {"amount": amount, "from": frm, "to": to, "rate": rate, "result": x}
            fields = {"amount": amount, "frm": frm, "to": to, "eun": particle_for(frm, "은"),
                      "eul": particle_for(frm, "을"), "ga": particle_for(frm, "가")}
            shown = f"{x:.2f}".rstrip("0").rstrip(".")  # plain decimals, never 6.2e+08
            final = FINAL[tool][lang].format(amount=amount, frm=frm, to=to, x=shown)
            target, check = shown, args
            key = f"tool:currency:{amount}:{frm}:{to}"
            why = f"Today's {frm}→{to} rate is not something I know; convert_currency gives it."
        else:
            a, b = rng.randint(1000, 99999), rng.randint(100, 9999)
            args = {"expression": f"{a} * {b}"}
            result = {"expression": args["expression"], "result": a * b}
            fields = {"a": a, "b": b, "b_reul": josa(str(b), "를"), "b_eun": josa(str(b), "은")}
            final = FINAL[tool][lang].format(a=a, b=b, x=a * b)
            target, check = str(a * b), {"value": a * b}
            key = f"tool:calc:{min(a, b)}:{max(a, b)}"
            why = f"{a} × {b} is a long product; the calculator computes it exactly."
        text = pick(rng, PHRASINGS[tool], lang, **fields)
        declared = [TOOLS[tool]] if tier == 1 else [TOOLS[n] for n in rng.sample(sorted(TOOLS), len(TOOLS))]
        answer_call = call_text(tool, args)
        call_reasoning = f"{why}\nCall {tool} with {json.dumps(args, ensure_ascii=False)}."
        result_text = json.dumps(result, ensure_ascii=False)
        final_reasoning = f"The tool returned {result_text}.\nAnswer: {target}."
        meta = {"key": key, "tool": tool, "check": check, "target": target}
        if tier in (1, 2):
            after = [{"role": "tool", "content": result_text},
                     {"role": "assistant", "content": final, "reasoning_content": final_reasoning}]
            return Example(user(text), answer_call, call_reasoning, dict(meta, stage="call"), declared, after)
        call_turn = {"role": "assistant", "content": "", "reasoning_content": call_reasoning,
                     "tool_calls": [{"type": "function", "function": {"name": tool, "arguments": args}}]}
        messages = user(text) + [call_turn, {"role": "tool", "content": result_text}]
        return Example(messages, final, final_reasoning, dict(meta, stage="answer"), declared)

    def score(self, example: Example, content: str, reply) -> float:
        meta = example.meta
        if meta["stage"] == "answer":
            # the weather reply repeats the date; a date is not the number being checked
            return float(not reply["tool_calls"] and math_equal(meta["target"], _DATE.sub(" ", content)))
        calls = reply["tool_calls"]
        if len(calls) != 1 or calls[0]["function"]["name"] != meta["tool"]:
            return 0.0
        args, check = calls[0]["function"]["arguments"], meta["check"]
        if not isinstance(args, dict):
            return 0.0
        if meta["tool"] == "get_weather":
            city = str(args.get("city", "")).strip().casefold()
            ok = set(args) == {"city", "date"} and city in {c.casefold() for c in check["city"]}
            return float(ok and str(args["date"]).strip() == check["date"])
        if meta["tool"] == "convert_currency":
            return float(set(args) == {"amount", "from", "to"} and _same_number(args["amount"], check["amount"])
                         and str(args["from"]).upper() == check["from"] and str(args["to"]).upper() == check["to"])
        value = evaluate(args.get("expression", "")) if set(args) == {"expression"} else None
        return float(value is not None and _same_number(value, check["value"]))

    def corrupt(self, example: Example, rng: random.Random) -> str:
        meta = example.meta
        if meta["stage"] == "answer":
            return super().corrupt(example, rng)
        call = json.loads(example.answer[len("<tool_call>"):-len("</tool_call>")])
        args = dict(call["arguments"])
        if meta["tool"] == "get_weather":
            args["date"] = args["date"][:-2] + ("29" if args["date"][-2:] != "29" else "01")
        elif meta["tool"] == "convert_currency":
            args["from"], args["to"] = args["to"], args["from"]
        else:
            a, b = args["expression"].split(" * ")
            args["expression"] = f"{a} + {b}"
        name = call["name"] if rng.random() < 0.7 else next(n for n in sorted(TOOLS) if n != call["name"])
        return call_text(name, args)
