"""Synthetic long-context reasoning / retrieval data: lookups, multi-hop chains, copying, two-hop
questions over several documents, aggregation over a long list.

K-EXAONE's context-extension stages mix rehearsal data, whole long documents and *synthetic
reasoning data* (report §3.2). A small model trained for minutes only learns to retrieve a fact
from far away if its training mixture contains that task, so this module writes the task, and the
NIAH evaluator (`kexa.eval.niah`) asks the same kind of question with *held-out* strings:

- kv        facts "The secret number of Velmora is 4821." spread at random depths through filler
            text; at the end one to three questions, each followed by its answer
            ("What is the secret number of Velmora? The secret number of Velmora is 4821.")
- multihop  a chain "Velmora is 4821. Tarsen is the same as Velmora. ..." (RULER's variable tracking):
            the question asks for the last name of the chain
- copy      a list of random keys early in the sequence, filler, then "Repeat the list:" and the list
            (every copied token is a long-range retrieval target: fast to learn induction from)
The report's synthetic set strengthens multi-step *reasoning* over long inputs, not only retrieval;
two tasks need more than one lookup:
- multidoc  "Document 1: ... Velmora is a member of Tarsel. ... Document 3: ... The secret number of
            Tarsel is 4821. ..." with distractor members and groups in every document; the question
            asks for the secret number of the group a person belongs to, and the answer spells out
            the step ("Velmora is a member of Tarsel. The secret number of Tarsel is 4821.")
- aggregate entries "Entry Velmora: 37." spread through the whole window; the question asks for
            the sum of all entries' numbers or how many exceed a threshold (every entry matters)

Keys are pseudo-words built from syllables and values are digit strings; `split="train"` and
`split="eval"` draw from disjoint sets (a hash of the string decides), so NIAH never asks about a
key or value seen in training. Fact templates come in the report's six languages (`TEMPLATES`).

Examples are built at the token level so their length is exact: each `pack` of `seq_len` tokens
holds examples back to back, separated by EOS, filled to the last token without padding; the
filler between facts is a random span of a token stream (the pre-training shards, or generated
text when none is given). Everything is deterministic given the seed.

    python -c "from kexa.data.synthetic import Vocab; import random; print(Vocab('train').key(random.Random(0)))"
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .shards import write_shards

# One language = (fact, question, answer prefix, fact suffix) templates; the answer prefix ends
# right before the value, so "prefix + ' ' + value + suffix" is the fact itself.
TEMPLATES: dict[str, dict[str, str]] = {
    "en": {"prefix": "The secret number of {key} is", "suffix": ".", "question": "What is the secret number of {key}?",
           "alias": "{key} has the same secret number as {other}.", "repeat": "Repeat the list:",
           "document": "Document {n}:", "member": "{key} is a member of {group}.",
           "hop_question": "What is the secret number of the group that {key} belongs to?",
           "entry": "Entry {key}: {value}.", "sum_question": "What is the sum of the numbers of all entries?",
           "sum_prefix": "The sum is", "count_question": "How many entries have a number greater than {x}?",
           "count_prefix": "The count is"},
    "ko": {"prefix": "{key}의 비밀 번호는", "suffix": "입니다.", "question": "{key}의 비밀 번호는 무엇입니까?",
           "alias": "{key}의 비밀 번호는 {other}와 같습니다.", "repeat": "목록을 반복하세요:",
           "document": "문서 {n}:", "member": "{key}의 소속은 {group}입니다.",
           "hop_question": "{key}의 소속 단체의 비밀 번호는 무엇입니까?",
           "entry": "항목 {key}: {value}.", "sum_question": "모든 항목의 숫자의 합은 무엇입니까?",
           "sum_prefix": "합은", "count_question": "숫자가 {x}보다 큰 항목은 몇 개입니까?",
           "count_prefix": "개수는"},
    "es": {"prefix": "El número secreto de {key} es", "suffix": ".", "question": "¿Cuál es el número secreto de {key}?",
           "alias": "{key} tiene el mismo número secreto que {other}.", "repeat": "Repite la lista:",
           "document": "Documento {n}:", "member": "{key} es miembro de {group}.",
           "hop_question": "¿Cuál es el número secreto del grupo al que pertenece {key}?",
           "entry": "Entrada {key}: {value}.", "sum_question": "¿Cuál es la suma de los números de todas las entradas?",
           "sum_prefix": "La suma es", "count_question": "¿Cuántas entradas tienen un número mayor que {x}?",
           "count_prefix": "La cantidad es"},
    "de": {"prefix": "Die geheime Zahl von {key} ist", "suffix": ".", "question": "Was ist die geheime Zahl von {key}?",
           "alias": "{key} hat dieselbe geheime Zahl wie {other}.", "repeat": "Wiederhole die Liste:",
           "document": "Dokument {n}:", "member": "{key} ist Mitglied von {group}.",
           "hop_question": "Was ist die geheime Zahl der Gruppe, zu der {key} gehört?",
           "entry": "Eintrag {key}: {value}.", "sum_question": "Was ist die Summe der Zahlen aller Einträge?",
           "sum_prefix": "Die Summe ist", "count_question": "Wie viele Einträge haben eine Zahl größer als {x}?",
           "count_prefix": "Die Anzahl ist"},
    "ja": {"prefix": "{key}の秘密の番号は", "suffix": "です。", "question": "{key}の秘密の番号は何ですか？",
           "alias": "{key}の秘密の番号は{other}と同じです。", "repeat": "リストを繰り返してください:",
           "document": "文書{n}:", "member": "{key}は{group}のメンバーです。",
           "hop_question": "{key}が所属するグループの秘密の番号は何ですか？",
           "entry": "項目{key}: {value}。", "sum_question": "すべての項目の数の合計は何ですか？",
           "sum_prefix": "合計は", "count_question": "数が{x}より大きい項目はいくつですか？",
           "count_prefix": "個数は"},
    "vi": {"prefix": "Số bí mật của {key} là", "suffix": ".", "question": "Số bí mật của {key} là gì?",
           "alias": "{key} có cùng số bí mật với {other}.", "repeat": "Lặp lại danh sách:",
           "document": "Tài liệu {n}:", "member": "{key} là thành viên của {group}.",
           "hop_question": "Số bí mật của nhóm mà {key} thuộc về là gì?",
           "entry": "Mục {key}: {value}.", "sum_question": "Tổng các số của tất cả các mục là bao nhiêu?",
           "sum_prefix": "Tổng là", "count_question": "Có bao nhiêu mục có số lớn hơn {x}?",
           "count_prefix": "Số lượng là"},
}
TASKS = ("kv", "multihop", "copy", "multidoc", "aggregate")
SYLLABLES = ("ka ne ro mi ta su lo ve ra tin mor dal fen gar hu jel ko lun pra sel tor vak wen yas zor bri "
             "cam dor el fa gil ha ir jo kel lam nor op pel quin ris sam tul ur vin xa yel zan").split()


class Vocab:
    """Keys (pseudo-words) and values (digit strings) of one split; train and eval never overlap."""

    def __init__(self, split: str, value_digits: int = 4):
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if value_digits < 1:
            raise ValueError(f"value_digits must be >= 1, got {value_digits}")
        self.split, self.value_digits = split, value_digits

    def _mine(self, s: str) -> bool:
        # one string in four is held out for evaluation, decided by a stable hash (not Python's hash())
        return (zlib.crc32(s.encode()) % 4 == 0) == (self.split == "eval")

    def key(self, rng: random.Random) -> str:
        while True:
            s = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
            if self._mine(s):
                return s

    def value(self, rng: random.Random) -> str:
        while True:
            s = str(rng.randrange(10 ** (self.value_digits - 1), 10 ** self.value_digits))
            if self._mine(s):
                return s

    def keys(self, rng: random.Random, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            k = self.key(rng)
            if k not in out:
                out.append(k)
        return out


def fact_text(lang: str, key: str, value: str) -> str:
    t = TEMPLATES[lang]
    return t["prefix"].format(key=key) + " " + value + t["suffix"]


class Filler:
    """Random spans of a token stream: the haystack between facts."""

    def __init__(self, tokens: np.ndarray):
        if tokens.size < 2:
            raise ValueError("filler needs a non-empty token stream")
        self.tokens = np.asarray(tokens, dtype=np.int64)

    @classmethod
    def from_shards(cls, shards, max_tokens: int = 1 << 20) -> "Filler":
        """Token shards (kexa.data.shards.TokenShards) concatenated without their EOS separators, so
        no example or haystack ever contains a document boundary."""
        parts = []
        for s in shards:
            toks = s.window(0, min(s.n_tokens, max_tokens))
            parts.append(toks[toks != s.eos_id] if s.eos_id is not None else toks)
        return cls(np.concatenate(parts))

    def span(self, rng: random.Random, n: int) -> list[int]:
        if n <= 0:
            return []
        stream = self.tokens
        if n >= stream.size:  # a short stream repeats (the original NIAH repeats its essays)
            stream = np.tile(stream, n // stream.size + 2)
        start = rng.randrange(0, stream.size - n)
        return stream[start:start + n].tolist()


def generated_filler_text(n_sentences: int = 400, seed: int = 0) -> str:
    """Plain sentences from a fixed word list: the haystack when no corpus is available."""
    rng = random.Random(seed)
    words = ("the river city morning light old house small garden people walk long road green hill quiet "
             "market evening window story book friend table music bridge winter summer field").split()
    return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + "."
                    for _ in range(n_sentences))


@dataclass
class SyntheticConfig:
    # copy lists are the densest retrieval signal (every copied token is one), kv is the NIAH task itself
    tasks: dict[str, float] = field(default_factory=lambda: {"kv": 0.5, "multihop": 0.1, "copy": 0.4})
    languages: list[str] = field(default_factory=lambda: ["en"])
    max_facts: int = 4  # facts per kv example (1 .. max_facts; the others are distractors)
    max_questions: int = 3  # questions per kv example
    max_hops: int = 3  # aliases in a multihop chain
    copy_items: tuple[int, int] = (4, 12)  # keys in a copy list
    max_documents: int = 4  # documents in a multidoc example (2 .. max_documents)
    aggregate_items: tuple[int, int] = (4, 24)  # entries in an aggregate example
    value_digits: int = 4
    min_example: int = 48  # tokens; shorter leftovers are merged into the previous example's filler

    def __post_init__(self) -> None:
        self.copy_items, self.aggregate_items = tuple(self.copy_items), tuple(self.aggregate_items)  # TOML lists
        for name in ("copy_items", "aggregate_items"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"synthetic {name} must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
        if self.max_documents < 2:
            raise ValueError(f"synthetic max_documents must be >= 2, got {self.max_documents}")
        bad = sorted(set(self.tasks) - set(TASKS))
        if bad or not self.tasks or any(w < 0 for w in self.tasks.values()) or sum(self.tasks.values()) <= 0:
            raise ValueError(f"synthetic tasks must be weights over {TASKS} with a positive sum, got {self.tasks}")
        bad = sorted(set(self.languages) - set(TEMPLATES))
        if bad or not self.languages:
            raise ValueError(f"synthetic languages must be among {sorted(TEMPLATES)}, got {self.languages}")


class SyntheticGenerator:
    """Token-exact examples of the tasks (TASKS). `encode(str) -> list[int]` is the tokenizer's."""

    def __init__(self, encode: Callable[[str], list[int]], filler: Filler, config: SyntheticConfig | None = None,
                 split: str = "train"):
        self.encode, self.filler = encode, filler
        self.config = config or SyntheticConfig()
        self.vocab = Vocab(split, self.config.value_digits)
        self._cache: dict[str, list[int]] = {}

    def enc(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = self.encode(text)
        return ids

    def line(self, text: str) -> list[int]:
        """A sentence on its own line: tokenised the same way wherever it appears."""
        return self.enc("\n" + text + "\n")

    def _weave(self, rng: random.Random, length: int, pieces: list[list[int]], tail: list[int]) -> list[int]:
        """Filler of the remaining length with `pieces` inserted in order at random depths, then `tail`."""
        room = length - len(tail) - sum(map(len, pieces))
        if room < 0:
            return []
        cuts = sorted(rng.randint(0, room) for _ in pieces)
        text = self.filler.span(rng, room)
        out, prev = [], 0
        for cut, piece in zip(cuts, pieces):
            out += text[prev:cut] + piece
            prev = cut
        return out + text[prev:] + tail

    def _first_fit(self, rng: random.Random, length: int, variants) -> list[int]:
        """Weave the first (pieces, tail) variant that fits `length` (variants go from the drawn size
        down to the smallest), so a short example keeps its task with fewer facts instead of being
        replaced by filler (at a 128-token pre-training length most drawn sizes would not fit)."""
        for pieces, tail in variants:
            out = self._weave(rng, length, pieces, tail)
            if out:
                return out
        return []

    def kv(self, rng: random.Random, length: int, lang: str) -> list[int]:
        c, t = self.config, TEMPLATES[lang]
        keys = self.vocab.keys(rng, rng.randint(1, c.max_facts))
        values = [self.vocab.value(rng) for _ in keys]
        order = list(range(len(keys)))
        rng.shuffle(order)
        asked = rng.randint(1, min(c.max_questions, len(keys)))

        def variant(n: int) -> tuple[list[list[int]], list[int]]:  # the facts order[:n], the first questions
            facts = [self.line(fact_text(lang, keys[i], values[i])) for i in sorted(order[:n])]
            tail: list[int] = []
            for i in order[:min(asked, n)]:
                tail += self.line(t["question"].format(key=keys[i])) + self.enc(t["prefix"].format(key=keys[i])) \
                    + self.enc(" " + values[i]) + self.enc(t["suffix"] + "\n")
            return facts, tail
        return self._first_fit(rng, length, (variant(n) for n in range(len(keys), 0, -1)))

    def multihop(self, rng: random.Random, length: int, lang: str) -> list[int]:
        t = TEMPLATES[lang]
        keys = self.vocab.keys(rng, rng.randint(2, self.config.max_hops + 1))
        value = self.vocab.value(rng)

        def variant(n: int) -> tuple[list[list[int]], list[int]]:  # a chain over keys[:n]
            chain = [self.line(fact_text(lang, keys[0], value))]
            chain += [self.line(t["alias"].format(key=b, other=a)) for a, b in zip(keys[:n], keys[1:n])]
            tail = self.line(t["question"].format(key=keys[n - 1])) + self.enc(t["prefix"].format(key=keys[n - 1])) \
                + self.enc(" " + value) + self.enc(t["suffix"] + "\n")
            return chain, tail
        return self._first_fit(rng, length, (variant(n) for n in range(len(keys), 1, -1)))

    def copy(self, rng: random.Random, length: int, lang: str) -> list[int]:
        lo, hi = self.config.copy_items
        keys = self.vocab.keys(rng, rng.randint(lo, hi))

        def variant(n: int) -> tuple[list[list[int]], list[int]]:
            items = " ".join(keys[:n])
            return [self.line(items)], self.line(TEMPLATES[lang]["repeat"]) + self.enc(items + "\n")
        return self._first_fit(rng, length, (variant(n) for n in range(len(keys), min(lo, 2) - 1, -1)))

    def multidoc(self, rng: random.Random, length: int, lang: str) -> list[int]:
        """Two hops across documents: person -> group (one document) -> group's number (another)."""
        t = TEMPLATES[lang]
        pairs = rng.randint(1, self.config.max_documents)  # (person, group) pairs; pair 0 is asked about
        names = self.vocab.keys(rng, 2 * pairs)
        people, groups = names[:pairs], names[pairs:]
        values = [self.vocab.value(rng) for _ in groups]
        n_docs = rng.randint(2, self.config.max_documents)

        def variant(n: int) -> tuple[list[list[int]], list[int]]:  # the first n pairs over min(n_docs, 2n) docs
            d = min(n_docs, 2 * n)
            facts = [(rng.randrange(d), self.line(t["member"].format(key=people[i], group=groups[i])))
                     for i in range(n)]
            facts += [(rng.randrange(d), self.line(fact_text(lang, groups[i], values[i]))) for i in range(n)]
            first = rng.randrange(d)  # the asked pair's two facts sit in two different documents
            facts[0] = (first, facts[0][1])
            facts[n] = ((first + rng.randrange(1, d)) % d, facts[n][1])
            pieces = []
            for doc in range(d):
                pieces.append(self.line(t["document"].format(n=doc + 1)))
                in_doc = [f for where, f in facts if where == doc]
                rng.shuffle(in_doc)
                pieces += in_doc
            person, group = people[0], groups[0]
            tail = self.line(t["hop_question"].format(key=person)) \
                + self.enc(t["member"].format(key=person, group=group) + " " + t["prefix"].format(key=group)) \
                + self.enc(" " + values[0]) + self.enc(t["suffix"] + "\n")
            return pieces, tail
        return self._first_fit(rng, length, (variant(n) for n in range(pairs, 0, -1)))

    def aggregate(self, rng: random.Random, length: int, lang: str) -> list[int]:
        """Entries through the whole window; the sum of their numbers, or how many exceed a threshold."""
        t = TEMPLATES[lang]
        lo, hi = self.config.aggregate_items
        keys = self.vocab.keys(rng, rng.randint(lo, hi))
        numbers = [rng.randint(1, 99) for _ in keys]
        op, threshold = rng.choice(("sum", "count")), rng.randint(10, 89)

        def variant(n: int) -> tuple[list[list[int]], list[int]]:  # the first n entries
            entries = [self.line(t["entry"].format(key=k, value=v)) for k, v in zip(keys[:n], numbers[:n])]
            if op == "sum":
                question, prefix, answer = t["sum_question"], t["sum_prefix"], sum(numbers[:n])
            else:
                question = t["count_question"].format(x=threshold)
                prefix, answer = t["count_prefix"], sum(v > threshold for v in numbers[:n])
            tail = self.line(question) + self.enc(prefix) + self.enc(f" {answer}") + self.enc(t["suffix"] + "\n")
            return entries, tail
        return self._first_fit(rng, length, (variant(n) for n in range(len(keys), 0, -1)))

    def example(self, rng: random.Random, length: int) -> list[int]:
        """One example of exactly `length` tokens (a task that does not fit falls back to filler)."""
        names = list(self.config.tasks)
        task = rng.choices(names, weights=[self.config.tasks[n] for n in names])[0]
        lang = rng.choice(self.config.languages)
        ids = getattr(self, task)(rng, length, lang)
        return ids if len(ids) == length else self.filler.span(rng, length)

    def pack(self, rng: random.Random, seq_len: int) -> list[list[int]]:
        """Examples whose lengths + one EOS each (added by the shard writer) sum to exactly seq_len.

        Lengths are log-uniform between min_example and what is left: many short examples (dense
        answers to learn the task from) and, in every pack, some spanning a large part of the window
        (fact-to-question distances up to the stage length)."""
        room, out = seq_len, []
        m = self.config.min_example
        while room > 0:
            n = room - 1 if room - 1 < 2 * m + 1 else int(math.exp(rng.uniform(math.log(m), math.log(room - 1))))
            out.append(self.example(rng, n))
            room -= n + 1
        return out


def write_synthetic_shards(generator: SyntheticGenerator, out_dir: str | Path, seq_len: int, n_tokens: int,
                           vocab_size: int, eos_id: int, seed: int = 0) -> dict:
    """At least n_tokens of packed synthetic examples as a shard set (each pack = seq_len tokens).

    Every example ends with EOS, and every pack ends with an example, so a loader window of
    seq_len + 1 tokens aligned on the packs never trains across two packs (the label after an EOS
    is masked by the loader)."""
    if seq_len < 2 * generator.config.min_example + 2:
        raise ValueError(f"seq_len {seq_len} is too short for synthetic examples of >= {generator.config.min_example} "
                         f"tokens (lower min_example)")
    rng = random.Random(seed)
    n_packs = max(2, -(-n_tokens // seq_len))
    docs = (ex for _ in range(n_packs) for ex in generator.pack(rng, seq_len))
    return write_shards(docs, out_dir, vocab_size, eos_id, extra_meta={"kind": "synthetic", "seq_len": seq_len,
                                                                     "seed": seed})


def answer_of(text: str) -> str:
    """The value a generated answer gives: its leading digits (a suffix such as "입니다." or "." ends it)."""
    m = re.match(r"\s*(\d+)", text)
    return m.group(1) if m else ""
