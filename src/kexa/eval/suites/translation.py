"""Translation: chrF and BLEU (sacrebleu) on human translations from the machine's gettext catalogues.

Data: the `.mo` catalogues under /usr/share/locale hold human translations of English UI messages into ko,
de, es, ja, vi (the same catalogues the corpus reads, `kexa.data.corpus`). The evaluation set is the
messages whose msgid falls in `corpus.translation_heldout` (3% by a hash of the msgid); the corpus builder
skips exactly those in every language, so no pre-training run has seen them. Kept: one-line messages of
4-40 English words with no format placeholders (%s, {0}, $VAR, <tags>), whose translation is not also the
translation of a training msgid, one translation per msgid (the catalogue first in hash order),
deterministic. Directions: en -> each language, and ko -> en.

Scoring: corpus-level BLEU and chrF with `sacrebleu` per direction (BLEU tokenizer "char" for ja and ko
targets, sacrebleu's default "13a" otherwise; chrF is sacrebleu's default chrF2), plus their means over
directions. The hypothesis and reference files are written to OUT/translation/<mode>.<src>-<tgt>.{hyp,ref}
so `sacrebleu REF -i HYP -m bleu chrf --tokenize T` reproduces every number (a test does).
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path

from .base import Suite

LANG_NAMES = {"en": "English", "ko": "Korean", "de": "German", "es": "Spanish", "ja": "Japanese", "vi": "Vietnamese"}
DIRECTIONS = ("en-ko", "en-de", "en-es", "en-ja", "en-vi", "ko-en")
TEMPLATE = "Translate the following {src} text into {tgt}. Reply with the translation only.\n\n{text}"
_PLACEHOLDER = re.compile(r"%|\{|\}|\$|<[^>]+>|\\|_|&|\t")


def bleu_tokenizer(tgt: str) -> str:
    return "char" if tgt in ("ja", "ko") else "13a"


@lru_cache(maxsize=8)
def heldout_pairs(lang: str) -> tuple[tuple[str, str], ...]:
    """(English msgid, `lang` translation) of the held-out messages, deterministic order."""
    from kexa.data.corpus import _catalogues, _mo_messages, translation_heldout
    messages = [m for path in _catalogues(lang) for m in _mo_messages(path)]
    # a held-out translation that is also the translation of a training msgid ("Out of memory" and "Memory
    # exhausted" share one Korean text) is in the corpus after all: such pairs are dropped
    in_corpus = {xx.strip() for msgid, xx in messages if not translation_heldout(msgid)}
    seen, out = set(), []
    for msgid, msgstr in messages:
        en, xx = msgid.strip(), msgstr.strip()
        if en in seen or not translation_heldout(msgid) or xx in in_corpus or "\n" in en or "\n" in xx:
            continue
        if not 4 <= len(en.split()) <= 40 or _PLACEHOLDER.search(en) or _PLACEHOLDER.search(xx):
            continue
        seen.add(en)
        out.append((en, xx))
    return tuple(sorted(out))


class Translation(Suite):
    name = "translation"
    max_tokens = 512

    def __init__(self, directions: str | list = ",".join(DIRECTIONS), per_direction: int = 100, seed: int = 0):
        self.directions = [d.strip() for d in (directions.split(",") if isinstance(directions, str) else directions)]
        bad = [d for d in self.directions if len(d.split("-")) != 2 or not set(d.split("-")) <= set(LANG_NAMES)
               or "en" not in d.split("-") or d.split("-")[0] == d.split("-")[1]]
        if bad:
            raise ValueError(f"translation directions {bad}: need en-XX or XX-en with XX in {sorted(LANG_NAMES)}")
        self.per_direction, self.seed = int(per_direction), int(seed)

    def settings(self) -> dict:
        return {"data": "gettext catalogues, translation held-out (kexa.data.corpus.translation_heldout)",
                "directions": self.directions, "per_direction": self.per_direction,
                "bleu_tokenize": {d: bleu_tokenizer(d.split("-")[1]) for d in self.directions}, "chrf": "chrF2"}

    def items(self, limit):
        per = self.per_direction if limit is None else min(limit, self.per_direction)
        out = []
        for d in self.directions:
            src, tgt = d.split("-")
            xx = tgt if src == "en" else src
            pairs = list(heldout_pairs(xx))
            if not pairs:
                raise ValueError(f"translation {d}: no held-out gettext messages for {xx} under /usr/share/locale")
            random.Random(f"translation:{self.seed}:{d}").shuffle(pairs)
            for k, (en, other) in enumerate(pairs[:per]):
                source, reference = (en, other) if src == "en" else (other, en)
                prompt = TEMPLATE.format(src=LANG_NAMES[src], tgt=LANG_NAMES[tgt], text=source)
                out.append({"id": f"{d}-{k}", "direction": d, "source": source, "reference": reference,
                            "messages": [{"role": "user", "content": prompt}]})
        return out

    def score(self, items, replies):
        import sacrebleu
        out = []
        for it, r in zip(items, replies):
            hyp = " ".join(r.content.split())  # one line per segment, as the sacrebleu files need
            out.append({"hypothesis": hyp, "chrf": sacrebleu.sentence_chrf(hyp, [it["reference"]]).score})
        return out

    def summarize(self, records, out_dir: Path, mode: str) -> dict:
        import sacrebleu
        folder = Path(out_dir) / "translation"
        folder.mkdir(parents=True, exist_ok=True)
        metrics: dict[str, float] = {}
        for d in self.directions:
            rows = [r for r in records if r["item"]["direction"] == d]
            if not rows:
                continue
            hyps = [r["scores"]["hypothesis"] for r in rows]
            refs = [" ".join(r["item"]["reference"].split()) for r in rows]
            (folder / f"{mode}.{d}.hyp").write_text("\n".join(hyps) + "\n", "utf-8")
            (folder / f"{mode}.{d}.ref").write_text("\n".join(refs) + "\n", "utf-8")
            metrics[f"bleu/{d}"] = sacrebleu.corpus_bleu(hyps, [refs], tokenize=bleu_tokenizer(d.split("-")[1])).score
            metrics[f"chrf/{d}"] = sacrebleu.corpus_chrf(hyps, [refs]).score
        done = [d for d in self.directions if f"bleu/{d}" in metrics]
        return {"bleu": sum(metrics[f"bleu/{d}"] for d in done) / len(done),
                "chrf": sum(metrics[f"chrf/{d}"] for d in done) / len(done), **metrics}
