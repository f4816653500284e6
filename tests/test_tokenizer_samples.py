"""Small multilingual texts for the tokenizer and chat tests (a helper module: it holds no tests)."""

import random

SENTENCES = {
    "ko": ["대한민국의 수도는 서울이다.", "오늘 날씨가 정말 좋네요.", "이 프로그램은 자유 소프트웨어입니다.",
           "파일을 열 수 없습니다: 권한이 거부되었습니다.", "한국어 문장을 토큰으로 나누는 방법을 배웁니다."],
    "en": ["The quick brown fox jumps over the lazy dog.", "This program is free software: you can redistribute it.",
           "In the beginning of the project, the team wrote the tests first.", "Could not open the file for writing.",
           "See the GNU General Public License for more details."],
    "es": ["El rápido zorro marrón salta sobre el perro perezoso.", "No se pudo abrir el archivo para escritura.",
           "Este programa es software libre; puede redistribuirlo.", "La señora Núñez comió piñas en el año pasado."],
    "de": ["Der schnelle braune Fuchs springt über den faulen Hund.", "Die Datei konnte nicht geöffnet werden.",
           "Dieses Programm ist freie Software; Sie können es weitergeben.", "Größere Änderungen müssen geprüft werden."],
    "ja": ["日本の首都は東京です。", "ファイルを開けませんでした。", "このプログラムはフリーソフトウェアです。",
           "コーヒーを飲みながらテキストを読みます。", "今日はとても良い天気ですね。"],
    "vi": ["Thủ đô của Việt Nam là Hà Nội.", "Không thể mở tập tin để ghi.", "Chương trình này là phần mềm tự do.",
           "Tiếng Việt có nhiều dấu thanh điệu khác nhau."],
    "code": ["def add(x, y):\n    return x + y\n", "for i in range(10):\n    print(i * 2)\n",
             "class Point:\n    def __init__(self, x, y):\n        self.x = x\n", "if __name__ == \"__main__\":\n    main()\n"],
    "stem": ["Solve for x: 3x + 5 = 20, so x = 5.", "$$ \\int_0^1 x^2\\,dx = \\frac{1}{3} $$",
             "The derivative of x^3 is 3x^2.", "Ratio: 3/4 = 0.75 and 12345 + 678 = 13023."],
}

ADVERSARIAL = [
    "", " ", "\n", "\t\t\n\r\n", "a", "  leading and trailing  ",
    "한국어와 English가 섞인 문장입니다.", "日本語のテキストとカタカナ、ひらがな、漢字。",
    "Tiếng Việt: Người ta thường nói rằng…", "Größe, Straße, Ärger; ¿Qué tal? ¡Olé!",
    "emoji 👍🏽 family 👨‍👩‍👧‍👦 flags 🇰🇷🇯🇵 and 🧑‍💻", "combining: e\u0301 a\u0308 \u1100\u1161\u11a8 Z\u0327\u0301\u0308",
    "controls: \x00\x01\x07\x1b[31mred\x1b[0m \x7f \u200b\u200d\ufeff end", "numbers 1234567890 3.14159 -42 1e10 ١٢٣",
    "code: def f(x):\n\treturn {'a': [1, 2]}  # comment\n", "<|endofturn|> <think> literal specials </tool_call>",
    "\ufffd replacement and \U0010fffd private use", "mixed\r\nline\rendings\n\n\n",
]


def corpus(n_lines: int = 3000, seed: int = 0) -> str:
    """A deterministic multilingual training text: sentences recombined so that word pairs repeat."""
    r = random.Random(seed)
    langs = list(SENTENCES)
    lines = []
    for _ in range(n_lines):
        lang = r.choice(langs)
        k = r.randint(1, 3)
        lines.append(" ".join(r.choice(SENTENCES[lang]) for _ in range(k)))
    return "\n".join(lines) + "\n"
