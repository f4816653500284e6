"""Language helpers for writing prompts natively: Korean particles that agree with the word before them,
the languages' names in each language, and people's names that read as native in each language."""

from __future__ import annotations

# Korean particle pairs (after a final consonant / after a vowel)
_JOSA = {"은": ("은", "는"), "는": ("은", "는"), "이": ("이", "가"), "가": ("이", "가"), "을": ("을", "를"),
         "를": ("을", "를"), "과": ("과", "와"), "와": ("과", "와"), "으로": ("으로", "로"), "로": ("으로", "로")}
# final consonant of the Sino-Korean reading of a last digit: 일 이 삼 사 오 육 칠 팔 구 (0: 십/백/천/만)
_DIGIT_BATCHIM = {"0": True, "1": True, "2": False, "3": True, "4": False, "5": False, "6": True,
                  "7": True, "8": True, "9": False}
_RIEUL_DIGITS = {"1", "7", "8"}  # 일 칠 팔 end in ㄹ: they take 로, not 으로


def josa(word: str, particle: str) -> str:
    """`word` + the form of `particle` that agrees with its last sound: josa("12", "을") -> "12를"."""
    return word + particle_for(word, particle)


def particle_for(word: str, particle: str) -> str:
    """The form of a Korean particle that agrees with the last sound of `word` (digits read in
    Sino-Korean, Latin letters by their names)."""
    with_consonant, with_vowel = _JOSA[particle]
    last = str(word).rstrip()[-1]
    if last.isdigit():
        batchim = _DIGIT_BATCHIM[last]
        rieul = last in _RIEUL_DIGITS
    elif "가" <= last <= "힣":
        final = (ord(last) - ord("가")) % 28
        batchim, rieul = final != 0, final == 8
    else:  # a Latin letter or symbol: read as its English letter name; only l/m/n/r end in a consonant
        batchim = last.lower() in "lmnr"
        rieul = last.lower() in "lr"
    if particle in ("으로", "로"):
        return "로" if (not batchim or rieul) else "으로"
    return with_consonant if batchim else with_vowel


# LANGUAGE_NAMES[writer][language]: how a prompt written in `writer` names `language`
LANGUAGE_NAMES = {
    "ko": {"ko": "한국어", "en": "영어", "es": "스페인어", "de": "독일어", "ja": "일본어", "vi": "베트남어"},
    "en": {"ko": "Korean", "en": "English", "es": "Spanish", "de": "German", "ja": "Japanese", "vi": "Vietnamese"},
    "es": {"ko": "coreano", "en": "inglés", "es": "español", "de": "alemán", "ja": "japonés", "vi": "vietnamita"},
    "de": {"ko": "Koreanisch", "en": "Englisch", "es": "Spanisch", "de": "Deutsch", "ja": "Japanisch",
           "vi": "Vietnamesisch"},
    "ja": {"ko": "韓国語", "en": "英語", "es": "スペイン語", "de": "ドイツ語", "ja": "日本語", "vi": "ベトナム語"},
    "vi": {"ko": "tiếng Hàn", "en": "tiếng Anh", "es": "tiếng Tây Ban Nha", "de": "tiếng Đức", "ja": "tiếng Nhật",
           "vi": "tiếng Việt"},
}

PEOPLE = {
    "ko": ["민지", "지훈", "서연", "도윤", "하은", "준호", "수빈", "현우"],
    "en": ["Emma", "Liam", "Olivia", "Noah", "Ava", "Ethan", "Mia", "Lucas"],
    "es": ["Lucía", "Mateo", "Sofía", "Diego", "Valeria", "Pablo", "Carmen", "Javier"],
    "de": ["Lena", "Lukas", "Mia", "Felix", "Hannah", "Jonas", "Clara", "Paul"],
    "ja": ["ゆき", "はると", "さくら", "けんた", "あおい", "りく", "はな", "そうた"],
    "vi": ["Lan", "Minh", "Hoa", "Tuấn", "Mai", "Nam", "Linh", "Dũng"],
}

# optional last sentences of a question whose answer is one number (more phrasings, same skill)
NUMBER_ONLY = {
    "en": ["", "", " Answer with just the number.", " Give only the final result.", " Reply briefly."],
    "ko": ["", "", " 숫자만 답하세요.", " 최종 결과만 알려 주세요.", " 간단히 답해 주세요."],
    "es": ["", "", " Responde solo con el número.", " Da solo el resultado final.", " Responde brevemente."],
    "de": ["", "", " Antworte nur mit der Zahl.", " Nenne nur das Endergebnis.", " Antworte kurz."],
    "ja": ["", "", "数字だけで答えてください。", "最終的な結果だけを教えてください。", "簡潔に答えてください。"],
    "vi": ["", "", " Chỉ trả lời bằng con số.", " Chỉ cho kết quả cuối cùng.", " Trả lời ngắn gọn."],
}
