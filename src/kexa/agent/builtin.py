"""The built-in offline tools: `search` (BM25 over a local collection, via `bm25s`), `open` (a page of that
collection by id; long pages go through the summarizer), `calculator` (arithmetic parsed with `ast`,
never `eval`), `python` (kexa's sandbox) and a small SQLite key-value store for state.

    coll = Collection.from_jsonl("pages.jsonl")          # {"id", "title", "text"} per line
    box = builtin_toolbox(coll, summarizer=Summarizer(client, over_tokens=1024))
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import bm25s

from ..sandbox import run_python
from ..tasks.tool import evaluate
from .tools import ToolBox, ToolOutput


class Collection:
    """Pages with ids, indexed once by bm25s (lower-cased word tokens, no stemming: six languages)."""

    def __init__(self, docs: list[dict]):
        if not docs:
            raise ValueError("a collection needs at least one page")
        for i, d in enumerate(docs):
            if not isinstance(d, dict) or not {"id", "text"} <= d.keys():
                raise ValueError(f"page {i}: expected an object with 'id' and 'text' (and an optional 'title')")
        self.docs = docs
        self.by_id = {str(d["id"]): d for d in docs}
        self.index = bm25s.BM25()
        self.index.index(self._tokens([f"{d.get('title', '')}\n{d['text']}" for d in docs]), show_progress=False)

    @staticmethod
    def _tokens(texts: list[str]):
        return bm25s.tokenize(texts, stopwords=None, show_progress=False)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> "Collection":
        docs = []
        for n, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON: {e.msg}") from e
        return cls(docs)

    def search(self, query: str, k: int) -> list[tuple[dict, float]]:
        k = max(1, min(k, len(self.docs)))
        ids, scores = self.index.retrieve(self._tokens([query]), k=k, show_progress=False)
        return [(self.docs[int(i)], float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]


def search_tools(collection: Collection, summarizer=None, snippet_chars: int = 160) -> list:
    """(search, open) over one collection."""

    def search(query: str, k: int = 5) -> list[dict]:
        """Search the document collection by keywords (BM25). Returns ids, titles and snippets.

        Args:
            query: keywords to look for
            k: how many results to return (1-20)
        """
        hits = collection.search(query, min(max(k, 1), 20))
        return [{"id": str(d["id"]), "title": d.get("title", ""), "snippet": d["text"][:snippet_chars]}
                for d, _ in hits]

    def open(doc_id: str, query: str = "") -> ToolOutput:
        """Open a page of the collection by its id. Long pages are summarised with the query in view.

        Args:
            doc_id: the page id from a search result
            query: what you are looking for on this page
        """
        doc = collection.by_id.get(str(doc_id))
        if doc is None:
            raise KeyError(f"no page with id {doc_id!r}")
        page = f"{doc.get('title', '')}\n{doc['text']}".strip()
        return summarizer(page, query) if summarizer else ToolOutput(page)

    return [search, open]


def calculator(expression: str) -> float | int:
    """Evaluate an arithmetic expression with numbers, + - * / and parentheses.

    Args:
        expression: the expression, e.g. "12 * (3 + 4.5)"
    """
    value = evaluate(expression)  # kexa.tasks.tool: an ast walk over a whitelist of nodes, no eval
    if value is None:
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    return value


def python(code: str) -> dict:
    """Run a Python program in a sandbox (no network, 10 s, 512 MB) and return its output.

    Args:
        code: the program; print what you want to see
    """
    r = run_python(code, timeout_s=10, memory_mb=512)
    return {"ok": r.ok, "stdout": r.stdout[-4000:], "stderr": r.stderr[-2000:], "reason": r.reason}


class KeyValue:
    """A key-value store in SQLite: the agent's notes survive compressions of its context."""

    def __init__(self, path: str = ":memory:"):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def tools(self) -> list:
        db = self.db

        def kv_set(key: str, value: str) -> str:
            """Store a note under a key (overwrites).

            Args:
                key: the note's name
                value: the note
            """
            with db:
                db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
            return "ok"

        def kv_get(key: str) -> str:
            """Read the note stored under a key.

            Args:
                key: the note's name
            """
            row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(f"no note under {key!r}; keys: {[k for (k,) in db.execute('SELECT key FROM kv')]}")
            return row[0]

        return [kv_set, kv_get]


def builtin_toolbox(collection: Collection | None = None, summarizer=None, kv: KeyValue | None = None,
                    timeout_s: float = 10.0) -> ToolBox:
    box = ToolBox(timeout_s)
    for fn in (search_tools(collection, summarizer) if collection else []):
        box.add(fn)
    box.add(calculator)
    box.add(python, timeout_s=30.0)  # the sandbox's own 10 s limit fires first
    for fn in (kv or KeyValue()).tools():
        box.add(fn)
    return box
