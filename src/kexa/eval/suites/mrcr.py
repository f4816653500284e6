"""Long context: multi-round co-reference resolution in the style of OpenAI-MRCR.

A long multi-turn conversation in which the user asks for many short pieces ("write a poem about tapirs",
"a short story about rain", ...) and the assistant writes each; a few identical requests appear several
times with different replies. The last turn asks: "Prepend {hash} to the {k}-th {kind} about {topic}. Do
not include any other text." The model must find the right one among look-alikes.

Grading is MRCR's: 0 when the answer does not start with the random hash; otherwise difflib's
SequenceMatcher ratio between the rest of the answer and the wanted reply. Conversations are generated
offline and deterministically (seed): replies are sentences drawn from `kexa.tasks`' native sentence banks
and word lists in the six languages, so each conversation is in one language. `turns` sets the number of
request/reply pairs (the context length grows with it; `needles` of them share the asked request).
"""

from __future__ import annotations

import difflib
import random
import string

from .base import Suite

KINDS = ["poem", "short story", "riddle", "haiku", "blog post", "letter"]
TOPICS = ["tapirs", "rain", "the sea", "old bridges", "coffee", "winter", "trains", "libraries", "bees", "mountains"]
ORDINALS = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th"}


def _sentence_bank() -> dict[str, list[str]]:
    from kexa.tasks.instruct import SENTENCES
    bank: dict[str, list[str]] = {}
    for by_lang in SENTENCES.values():
        for lang, sentences in by_lang.items():
            bank.setdefault(lang, []).extend(sentences)
    return bank


def grade(answer: str, target: str, prefix: str) -> float:
    """OpenAI-MRCR's grade: 0 without the prefix, else the similarity of the rest to the target."""
    if not answer.startswith(prefix):
        return 0.0
    return difflib.SequenceMatcher(None, answer[len(prefix):], target[len(prefix):]).ratio()


def make_conversation(rng: random.Random, turns: int, needles: int, lang: str, bank: dict) -> tuple[list, str, str]:
    """(messages, target reply, prefix): `turns` request/reply pairs, `needles` of them the same request."""
    kind, topic = rng.choice(KINDS), rng.choice(TOPICS)
    slots = sorted(rng.sample(range(turns), needles))
    messages, needle_replies = [], []
    for t in range(turns):
        if t in slots:
            k, tp = kind, topic
        else:
            while (k := rng.choice(KINDS), tp := rng.choice(TOPICS)) == (kind, topic):
                pass
        reply = " ".join(rng.sample(bank[lang], k=min(len(bank[lang]), rng.randint(3, 6))))
        reply = f"{k.capitalize()} about {tp} ({rng.randint(100, 999)}): {reply}"
        messages += [{"role": "user", "content": f"Write a {k} about {tp}."}, {"role": "assistant", "content": reply}]
        if t in slots:
            needle_replies.append(reply)
    which = rng.randint(1, needles)
    prefix = "".join(rng.choices(string.ascii_letters + string.digits, k=10))
    messages.append({"role": "user", "content": f"Prepend {prefix} to the {ORDINALS[which]} (1 indexed) {kind} about "
                                                f"{topic}. Do not include any other text in your response."})
    return messages, prefix + needle_replies[which - 1], prefix


class MRCR(Suite):
    name = "mrcr"
    max_tokens = 1024

    def __init__(self, n: int = 24, turns: int = 16, needles: int = 2, seed: int = 0):
        self.n, self.turns, self.needles, self.seed = int(n), int(turns), int(needles), int(seed)
        if not 1 <= self.needles <= min(4, self.turns):
            raise ValueError(f"needles must lie in 1..min(4, turns); got {needles} with {turns} turns")

    def settings(self) -> dict:
        return {"n": self.n, "turns": self.turns, "needles": self.needles, "grading": "OpenAI-MRCR SequenceMatcher"}

    def items(self, limit):
        import kexa.tasks
        bank = _sentence_bank()
        out = []
        for k in range(self.n if limit is None else min(limit, self.n)):
            lang = kexa.tasks.LANGS[k % len(kexa.tasks.LANGS)]
            rng = random.Random(f"mrcr:{self.seed}:{k}")
            messages, target, prefix = make_conversation(rng, self.turns, self.needles, lang, bank)
            out.append({"id": str(k), "lang": lang, "messages": messages, "target": target, "prefix": prefix})
        return out

    def score(self, items, replies):
        return [{"score": grade(r.content, it["target"], it["prefix"]),
                 "prefixed": float(r.content.startswith(it["prefix"]))} for it, r in zip(items, replies)]
