"""The suite interface the harness runs, and the JSONL reader every data-file suite shares."""

from __future__ import annotations

from pathlib import Path

from ...data.jsonl import iter_jsonl


class Suite:
    """name; kind "chat" (items carry `messages`), "loglikelihood" (items carry `pairs` of (context,
    continuation)) or "episode" (the suite's `run_episode(client, item, params, thinking) -> Reply` talks to the
    model over several turns itself); `max_tokens` (None: the harness's); items(limit) -> JSON-able dicts with a
    unique `id`;
    score(items, replies) -> one dict per item; summarize(records, out_dir, mode) -> {metric: value}."""

    name = ""
    kind = "chat"
    max_tokens: int | None = None

    def items(self, limit: int | None) -> list[dict]:
        raise NotImplementedError

    def score(self, items: list[dict], replies: list) -> list[dict]:
        raise NotImplementedError

    def summarize(self, records: list[dict], out_dir: Path, mode: str) -> dict:
        """Default: the mean of each numeric per-item score."""
        keys = [k for k, v in records[0]["scores"].items() if isinstance(v, (int, float, bool))]
        return {k: sum(float(r["scores"][k]) for r in records) / len(records) for k in keys}

    def settings(self) -> dict:
        """What the suite's numbers depend on (data source, template, sizes): recorded in results.json."""
        return {}


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a JSONL file; a missing file, a bad line or a missing field is one ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rows = []
    for at, row in iter_jsonl(path.read_text("utf-8").splitlines(), path, bad="not JSON"):
        if not isinstance(row, dict):
            raise ValueError(f"{at}: expected a JSON object per line")
        missing = [k for k in required if k not in row]
        if missing:
            raise ValueError(f"{at}: missing field(s) {missing}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def take(items: list[dict], limit: int | None) -> list[dict]:
    return items if limit is None else items[:limit]
