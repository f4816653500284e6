"""Instruction following, IFEval-style: verifiable instructions added to `kexa.tasks` prompts.

IFEval (Zhou et al. 2023) checks 25 instruction types by program. Its checker ships inside lm-eval
(`lm_eval/tasks/ifeval`), but importing it downloads NLTK data, which an offline machine cannot do; so the
types below are re-implemented from IFEval's definitions, with the same ids, descriptions and kwargs.
Differences: sentences are split by a punctuation regex, not NLTK punkt; language identification is lingua
(kexa.rewards.detect_language), not langdetect.

Implemented (22 of IFEval's 25): keywords:{existence, forbidden_words, frequency, letter_frequency},
length_constraints:{number_words, number_sentences, number_paragraphs}, detectable_format:{number_bullet_lists,
json_format, title, number_highlighted_sections, multiple_sections}, change_case:{english_lowercase,
english_capital, capital_word_frequency}, punctuation:no_comma, startend:{end_checker, quotation},
detectable_content:{postscript, number_placeholders}, combination:{repeat_prompt, two_responses}. Not
implemented: language:response_language (the base prompts are English), length_constraints:
nth_paragraph_first_word, detectable_format:constrained_response.

Items: each held-out English prompt of a `kexa.tasks` family gets 1-3 instructions whose groups do not
conflict (`GROUP`), drawn with the instruction's own parameters. Metrics are IFEval's four:
prompt-level and instruction-level accuracy, strict and loose (loose also accepts the reply with its first
line, last line or both removed, and with markdown `*` removed).
"""

from __future__ import annotations

import json
import random
import re

from .base import Suite

BASE_TASKS = ("arith", "word", "strings", "sorting", "convert", "math")
WORDS = ["river", "garden", "window", "music", "market", "planet", "letter", "bridge", "summer", "coffee",
         "engine", "forest", "island", "pencil", "travel"]
PHRASES = ["Is there anything else I can help with?", "Let me know if you have additional questions.",
           "That is all."]
_ONLY = re.compile(r"\s*Give only the final result\.")
RELATIONS = {"at least": lambda a, n: a >= n, "less than": lambda a, n: a < n}


def _words(text: str) -> list[str]:
    return re.findall(r"\b\w+\b", text)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if _words(s)]


# each checker: (description template, kwargs sampler, check(text, **kw) -> bool)
def _existence(rng):
    return {"keywords": rng.sample(WORDS, 2)}


def _check_existence(text, keywords):
    return all(re.search(rf"\b{re.escape(k)}\b", text, re.I) for k in keywords)


def _forbidden(rng):
    return {"forbidden_words": rng.sample(WORDS, 2)}


def _check_forbidden(text, forbidden_words):
    return not any(re.search(rf"\b{re.escape(k)}\b", text, re.I) for k in forbidden_words)


def _frequency(rng):
    return {"keyword": rng.choice(WORDS), "frequency": rng.randint(1, 3), "relation": rng.choice(list(RELATIONS))}


def _check_frequency(text, keyword, frequency, relation):
    return RELATIONS[relation](len(re.findall(rf"\b{re.escape(keyword)}\b", text, re.I)), frequency)


def _letter(rng):
    return {"letter": rng.choice("bdfgkmpwyz"), "let_frequency": rng.randint(2, 6), "let_relation": rng.choice(list(RELATIONS))}


def _check_letter(text, letter, let_frequency, let_relation):
    return RELATIONS[let_relation](text.lower().count(letter), let_frequency)


def _nwords(rng):
    return {"num_words": rng.choice([20, 50, 100, 200]), "relation": rng.choice(list(RELATIONS))}


def _check_nwords(text, num_words, relation):
    return RELATIONS[relation](len(_words(text)), num_words)


def _nsent(rng):
    return {"num_sentences": rng.randint(2, 6), "relation": rng.choice(list(RELATIONS))}


def _check_nsent(text, num_sentences, relation):
    return RELATIONS[relation](len(_sentences(text)), num_sentences)


def _npara(rng):
    return {"num_paragraphs": rng.randint(2, 4)}


def _check_npara(text, num_paragraphs):
    parts = re.split(r"\s?\*\*\*\s?", text.strip())
    return len(parts) == num_paragraphs and all(p.strip() for p in parts)


def _bullets(rng):
    return {"num_bullets": rng.randint(2, 5)}


def _check_bullets(text, num_bullets):
    return len(re.findall(r"^\s*[*-]\s[^\n]*$", text, re.M)) == num_bullets


def _check_json(text):
    body = text.strip()
    body = re.sub(r"^```(?:json|Json|JSON)?\s*|\s*```$", "", body)
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _check_title(text):
    return any(t.strip() for t in re.findall(r"<<([^\n]+?)>>", text))


def _highlights(rng):
    return {"num_highlights": rng.randint(1, 3)}


def _check_highlights(text, num_highlights):
    spans = [s for s in re.findall(r"\*[^\n*]+\*", text) if s.strip("* ")]
    spans += [s for s in re.findall(r"\*\*[^\n*]+\*\*", text) if s.strip("* ")]
    return len(spans) >= num_highlights


def _sections(rng):
    return {"section_spliter": rng.choice(["Section", "SECTION"]), "num_sections": rng.randint(2, 4)}


def _check_sections(text, section_spliter, num_sections):
    parts = re.split(rf"\s?{re.escape(section_spliter)}\s?\d+\s?", text)
    return len(parts) - 1 >= num_sections


def _check_lower(text):
    return text == text.lower() and any(c.isalpha() for c in text)


def _check_upper(text):
    return text == text.upper() and any(c.isalpha() for c in text)


def _capital(rng):
    return {"capital_frequency": rng.randint(2, 5), "capital_relation": rng.choice(list(RELATIONS))}


def _check_capital(text, capital_frequency, capital_relation):
    return RELATIONS[capital_relation](sum(w.isupper() and len(w) > 1 for w in _words(text)), capital_frequency)


def _check_no_comma(text):
    return "," not in text


def _end(rng):
    return {"end_phrase": rng.choice(PHRASES)}


def _check_end(text, end_phrase):
    return text.strip().strip('"').lower().endswith(end_phrase.lower())


def _check_quotation(text):
    t = text.strip()
    return len(t) > 1 and t[0] == '"' and t[-1] == '"'


def _postscript(rng):
    return {"postscript_marker": rng.choice(["P.S.", "P.P.S"])}


def _check_postscript(text, postscript_marker):
    marker = r"\s*p\.\s?p\.\s?s" if postscript_marker == "P.P.S" else r"\s*p\.\s?s\."
    return bool(re.search(marker + r".*$", text.lower(), re.M))


def _placeholders(rng):
    return {"num_placeholders": rng.randint(1, 3)}


def _check_placeholders(text, num_placeholders):
    return len(re.findall(r"\[.*?\]", text)) >= num_placeholders


def _check_repeat(text, prompt_to_repeat):
    return text.strip().lower().startswith(prompt_to_repeat.strip().lower())


def _check_two(text):
    parts = text.split("******")
    return len(parts) == 2 and all(p.strip() for p in parts) and parts[0].strip() != parts[1].strip()


# id -> (group, description, sampler or None, checker). Instructions of one group conflict; "whole" conflicts
# with every other instruction (it fixes the shape of the entire reply).
INSTRUCTIONS = {
    "keywords:existence": ("kw_in", "Include keywords {keywords} in the response.", _existence, _check_existence),
    "keywords:forbidden_words": ("kw_out", "Do not include keywords {forbidden_words} in the response.", _forbidden,
                                 _check_forbidden),
    "keywords:frequency": ("kw_in", "In your response, the word {keyword} should appear {relation} {frequency} times.",
                           _frequency, _check_frequency),
    "keywords:letter_frequency": ("letters", "In your response, the letter {letter} should appear {let_relation} "
                                  "{let_frequency} times.", _letter, _check_letter),
    "length_constraints:number_words": ("length", "Answer with {relation} {num_words} words.", _nwords, _check_nwords),
    "length_constraints:number_sentences": ("length", "Your response should contain {relation} {num_sentences} "
                                            "sentences.", _nsent, _check_nsent),
    "length_constraints:number_paragraphs": ("layout", "There should be {num_paragraphs} paragraphs. Paragraphs are "
                                             "separated with the markdown divider: ***", _npara, _check_npara),
    "detectable_format:number_bullet_lists": ("layout", "Your answer must contain exactly {num_bullets} bullet points. "
                                              "Use the markdown bullet points such as:\n* This is point 1.\n"
                                              "* This is point 2", _bullets, _check_bullets),
    "detectable_format:json_format": ("whole", "Entire output should be wrapped in JSON format. You can use markdown "
                                      "ticks such as ```.", None, _check_json),
    "detectable_format:title": ("title", "Your answer must contain a title, wrapped in double angular brackets, such "
                                "as <<poem of joy>>.", None, _check_title),
    "detectable_format:number_highlighted_sections": ("highlight", "Highlight at least {num_highlights} sections in "
                                                      "your answer with markdown, i.e. *highlighted section*.",
                                                      _highlights, _check_highlights),
    "detectable_format:multiple_sections": ("layout", "Your response must have {num_sections} sections. Mark the "
                                            "beginning of each section with {section_spliter} X, such as:\n"
                                            "{section_spliter} 1\n[content of section 1]\n{section_spliter} 2\n"
                                            "[content of section 2]", _sections, _check_sections),
    "change_case:english_lowercase": ("case", "Your entire response should be in English, and in all lowercase "
                                      "letters. No capital letters are allowed.", None, _check_lower),
    "change_case:english_capital": ("case", "Your entire response should be in English, and in all capital letters.",
                                    None, _check_upper),
    "change_case:capital_word_frequency": ("case", "In your response, words with all capital letters should appear "
                                           "{capital_relation} {capital_frequency} times.", _capital, _check_capital),
    "punctuation:no_comma": ("comma", "In your entire response, refrain from the use of any commas.", None,
                             _check_no_comma),
    "startend:end_checker": ("end", "Finish your response with this exact phrase {end_phrase}. No other words should "
                             "follow this phrase.", _end, _check_end),
    "startend:quotation": ("whole", "Wrap your entire response with double quotation marks.", None, _check_quotation),
    "detectable_content:postscript": ("end", "At the end of your response, please explicitly add a postscript "
                                      "starting with {postscript_marker}", _postscript, _check_postscript),
    "detectable_content:number_placeholders": ("placeholder", "The response must contain at least {num_placeholders} "
                                               "placeholders represented by square brackets, such as [address].",
                                               _placeholders, _check_placeholders),
    "combination:repeat_prompt": ("whole", "First repeat the request word for word without change, then give your "
                                  "answer (1. do not say any words or characters before repeating the request; 2. the "
                                  "request you need to repeat does not include this sentence)", None, _check_repeat),
    "combination:two_responses": ("whole", "Give two different responses. Responses and only responses should be "
                                  "separated by 6 asterisk symbols: ******.", None, _check_two),
}


def check(instruction_id: str, text: str, kwargs: dict) -> bool:
    """IFEval's rule: an empty reply follows no instruction (not even "avoid these words")."""
    return bool(text.strip()) and bool(INSTRUCTIONS[instruction_id][3](text, **kwargs))


def loose_variants(text: str) -> list[str]:
    """IFEval's loose check: the reply, without its first line, last line or both, each also without '*'."""
    lines = text.split("\n")
    base = [text, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [v for t in base for v in (t, t.replace("*", ""))]


def pick_instructions(rng: random.Random, base: str) -> list[tuple[str, dict]]:
    """1-3 instructions from distinct groups; a "whole" instruction always comes alone."""
    ids = list(INSTRUCTIONS)
    first = rng.choice(ids)
    if INSTRUCTIONS[first][0] == "whole":
        chosen = [first]
    else:
        chosen, groups = [first], {INSTRUCTIONS[first][0]}
        for _ in range(rng.randint(0, 2)):
            options = [i for i in ids if INSTRUCTIONS[i][0] not in groups | {"whole"}]
            nxt = rng.choice(options)
            chosen.append(nxt)
            groups.add(INSTRUCTIONS[nxt][0])
    out = []
    for i in chosen:
        sampler = INSTRUCTIONS[i][2]
        kw = sampler(rng) if sampler else {}
        if i == "combination:repeat_prompt":
            kw = {"prompt_to_repeat": base}
        out.append((i, kw))
    return out


def describe(instruction_id: str, kwargs: dict) -> str:
    kw = {k: (", ".join(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    return INSTRUCTIONS[instruction_id][1].format(**kw)


class IFEval(Suite):
    name = "ifeval"
    max_tokens = 2048

    def __init__(self, n: int = 120, seed: int = 0):
        self.n, self.seed = int(n), int(seed)

    def settings(self) -> dict:
        return {"base_prompts": f"kexa.tasks held-out, English ({', '.join(BASE_TASKS)})",
                "instruction_types": len(INSTRUCTIONS), "n": self.n}

    def items(self, limit):
        import kexa.tasks
        rng = random.Random(f"ifeval:{self.seed}")
        out = []
        for k in range(self.n if limit is None else min(limit, self.n)):
            task = kexa.tasks.get(BASE_TASKS[k % len(BASE_TASKS)])
            # "Give only the final result." would contradict length and format instructions: dropped
            base = _ONLY.sub("", task.sample(rng, lang="en", split="heldout").messages[-1]["content"]).strip()
            chosen = pick_instructions(rng, base)
            prompt = base + " " + " ".join(describe(i, kw) for i, kw in chosen)
            out.append({"id": str(k), "base": base, "instruction_id_list": [i for i, _ in chosen],
                        "kwargs": [kw for _, kw in chosen], "messages": [{"role": "user", "content": prompt}]})
        return out

    def score(self, items, replies):
        out = []
        for it, r in zip(items, replies):
            strict = [check(i, r.content, kw) for i, kw in zip(it["instruction_id_list"], it["kwargs"])]
            variants = loose_variants(r.content)
            loose = [any(check(i, v, kw) for v in variants) for i, kw in zip(it["instruction_id_list"], it["kwargs"])]
            out.append({"prompt_strict": float(all(strict)), "prompt_loose": float(all(loose)),
                        "follow_strict": strict, "follow_loose": loose})
        return out

    def summarize(self, records, out_dir, mode) -> dict:
        strict = [x for r in records for x in r["scores"]["follow_strict"]]
        loose = [x for r in records for x in r["scores"]["follow_loose"]]
        n = len(records)
        return {"prompt_strict": sum(r["scores"]["prompt_strict"] for r in records) / n,
                "instruction_strict": sum(strict) / len(strict),
                "prompt_loose": sum(r["scores"]["prompt_loose"] for r in records) / n,
                "instruction_loose": sum(loose) / len(loose)}
