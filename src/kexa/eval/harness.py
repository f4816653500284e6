"""The evaluation harness: suites x modes over one `kexa.client.ModelClient`, resumable, every setting recorded.

    kexa eval run --model runs/nano/model --suite math,mcq,ifeval --mode both --limit 50 --out runs/eval
    kexa eval run --endpoint http://localhost:8000/v1 --suite translation --out runs/eval-vllm

    from kexa.eval.harness import run_eval
    result = run_eval(client, ["math"], modes=["reasoning"], out_dir="runs/eval", limit=20)
    result["suites"]["math"]["accuracy"]

Shape (lm-evaluation-harness's split: data, a scorer, a runner): a suite (`kexa.eval.suites`) turns its data
into items — chat prompts, or (context, continuation) pairs for log-likelihood scoring — and scores replies;
this runner feeds the items to the client in chunks and writes, per suite and mode,
`OUT/items/<suite>.<mode>.jsonl`: one line per item with the prompt id, the reply (reasoning and answer),
its scores or its error. A line is appended and fsynced as soon as its chunk is scored, so an interrupted run
loses at most one chunk: rerunning the same command reads the lines back and asks only for the items not yet
answered (items that failed with an error are asked again). At the end:
- `OUT/results.json`: {"suites": {suite: {metric: value}}, "settings": {...}}. With one mode the metrics are
  plain (`accuracy`); with several, the first mode's metrics are plain (reasoning first: K-EXAONE's default)
  and every mode's are also under `<mode>/<metric>`. Each suite's `n` and `errors` (items whose call
  failed: not scored, counted apart) are metrics too.
- `OUT/results.md`: the same numbers as one markdown table (suite x metric, a column per mode).
Settings default to the report's (temperature 1.0, top-p 0.95, MTP off) and are all written to results.json.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..client import GenParams, ModelClient, Reply

MODES = {"reasoning": True, "plain": False}


def parse_modes(mode: str) -> list[str]:
    if mode == "both":
        return ["reasoning", "plain"]
    if mode not in MODES:
        raise ValueError(f"--mode must be reasoning, plain or both; got {mode!r}")
    return [mode]


# ---------------------------------------------------------------------------------------------- item files
def read_records(path: Path) -> dict[str, dict]:
    """id -> the last record written for it. A torn last line (a crash mid-write) is ignored."""
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "id" in rec:
            records[str(rec["id"])] = rec
    return records


def append_records(path: Path, records: list[dict]) -> None:
    """Append and fsync: what returns from here survives a crash. A torn last line (a crash mid-write) is
    closed with a newline first, so it cannot swallow the next record."""
    torn = False
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------- runner
def run_suite(client: ModelClient, suite, mode: str, items: list[dict], path: Path, params: GenParams,
              chunk: int = 8, progress: Callable[[str], None] = print) -> list[dict]:
    """Answer and score the items of one suite in one mode, resuming from `path`. Returns every item's record."""
    done = {k: r for k, r in read_records(path).items() if r.get("error") is None}
    todo = [it for it in items if str(it["id"]) not in done]
    if done:
        progress(f"{suite.name}/{mode}: {len(done)} items already answered in {path}, {len(todo)} to go")
    t0 = time.perf_counter()
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        if suite.kind == "loglikelihood":
            replies = [_loglikelihood_reply(client, it["pairs"]) for it in batch]
        elif suite.kind == "episode":  # the suite talks to the model itself, over several turns (agentic)
            replies = [suite.run_episode(client, it, params, MODES[mode]) for it in batch]
        elif any(it.get("tools") for it in batch):  # tool declarations are per conversation: one call each
            replies = [client.chat([it["messages"]], params, thinking=MODES[mode], tools=it.get("tools"))[0]
                       for it in batch]
        else:
            replies = client.chat([it["messages"] for it in batch], params, thinking=MODES[mode])
        ok = [(it, r) for it, r in zip(batch, replies) if r.error is None]
        scores = iter(suite.score([it for it, _ in ok], [r for _, r in ok]) if ok else [])
        records = []
        for it, r in zip(batch, replies):
            rec = {"id": it["id"], "mode": mode, "item": it, "reply": r.to_dict(), "error": r.error}
            if r.error is None:
                rec["scores"] = next(scores)
            records.append(rec)
        append_records(path, records)
        for rec in records:
            done[str(rec["id"])] = rec
        n = min(start + chunk, len(todo))
        progress(f"{suite.name}/{mode}: {n}/{len(todo)} ({time.perf_counter() - t0:.1f}s, "
                 f"{sum(r['error'] is not None for r in records)} errors in the last chunk)")
    by_id = read_records(path)  # the last line per id: answered ones plus the latest failure of the others
    return [by_id[str(it["id"])] for it in items if str(it["id"]) in by_id]


def _loglikelihood_reply(client: ModelClient, pairs: list[list[str]]) -> Reply:
    """All choices of one item as one Reply: text holds the JSON list of (logprob, greedy) per choice."""
    t = time.perf_counter()
    scored = client.loglikelihood([(c, x) for c, x in pairs])
    errors = [s for s in scored if isinstance(s, str)]
    if errors:
        return Reply(error=errors[0], seconds=time.perf_counter() - t)
    return Reply(text=json.dumps(scored), content=json.dumps(scored), finish_reason="stop",
                 seconds=time.perf_counter() - t)


def summarize(suite, records: list[dict], out_dir: Path, mode: str) -> dict[str, float]:
    scored = [r for r in records if r.get("error") is None]
    metrics = suite.summarize(scored, out_dir, mode) if scored else {}
    return {**metrics, "n": len(scored), "errors": len(records) - len(scored)}


def run_eval(client: ModelClient, suite_names: list, modes: list[str], out_dir: str | Path,
             limit: int | None = None, params: GenParams | None = None, suite_options: dict | None = None,
             chunk: int = 8, max_tokens: int | None = None, progress: Callable[[str], None] = print) -> dict:
    """Run every suite (a name, or a built Suite) in every mode; write results.json, results.md and the
    per-item files; return the result. Each suite generates up to its own `max_tokens` (reasoning needs room) unless `max_tokens` overrides it."""
    from .suites import build_suite
    out = Path(out_dir)
    (out / "items").mkdir(parents=True, exist_ok=True)
    params = params or GenParams()
    suites = [build_suite(name, **(suite_options or {}).get(name, {})) if isinstance(name, str) else name
              for name in suite_names]  # bad options fail here, before any work
    result: dict = {"suites": {}, "settings": {
        "target": client.describe(), "suites": [x.name for x in suites], "modes": modes, "limit": limit,
        **{k: v for k, v in asdict(params).items() if k not in ("speculative", "max_tokens")}, "mtp": params.speculative > 0,
        "max_tokens_by_suite": {}, "suite_settings": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    per_mode: dict[str, dict[str, dict]] = {}
    for suite in suites:
        items = suite.items(limit)
        suite_params = GenParams(**{**asdict(params), "max_tokens": max_tokens or suite.max_tokens or params.max_tokens})
        result["settings"]["max_tokens_by_suite"][suite.name] = suite_params.max_tokens
        result["settings"]["suite_settings"][suite.name] = suite.settings()
        suite_modes = ["loglikelihood"] if suite.kind == "loglikelihood" else modes
        for mode in suite_modes:
            path = out / "items" / f"{suite.name}.{mode}.jsonl"
            records = run_suite(client, suite, mode, items, path, suite_params, chunk, progress)
            per_mode.setdefault(suite.name, {})[mode] = summarize(suite, records, out, mode)
    for name, by_mode in per_mode.items():
        first = next(iter(by_mode))
        metrics = dict(by_mode[first])
        if len(by_mode) > 1:
            metrics.update({f"{m}/{k}": v for m, ms in by_mode.items() for k, v in ms.items()})
        result["suites"][name] = metrics
    result["settings"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")
    (out / "results.md").write_text(markdown_table(per_mode, result["settings"]), "utf-8")
    return result


def markdown_table(per_mode: dict[str, dict[str, dict]], settings: dict) -> str:
    modes = sorted({m for by in per_mode.values() for m in by}, key=lambda m: list(MODES).index(m) if m in MODES else 9)
    lines = [f"Evaluation of {settings['target'].get('name')} — temperature {settings['temperature']}, "
             f"top-p {settings['top_p']}, MTP {'on' if settings['mtp'] else 'off'}, limit {settings['limit']}", "",
             "| suite | metric | " + " | ".join(modes) + " |", "|---|---|" + "---|" * len(modes)]
    for name, by_mode in per_mode.items():
        keys = list(dict.fromkeys(k for ms in by_mode.values() for k in ms))
        for k in keys:
            cells = [by_mode.get(m, {}).get(k) for m in modes]
            lines.append(f"| {name} | {k} | " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def stages_table(results: dict[str, dict], metrics: dict[str, str | list[str]] | None = None) -> str:
    """One markdown table, suite x stage (both modes where run), from `run_eval` results keyed by stage name
    (the speedrun's evaluation table, K-EXAONE Table 3 in miniature). `metrics` picks each suite's headline
    metric, or a list of metrics (a row each) (default: its first)."""
    suites = list(dict.fromkeys(s for r in results.values() for s in r["suites"]))
    modes = list(dict.fromkeys(m for r in results.values() for m in r["settings"]["modes"]))
    head = [f"{stage} {mode}" for stage in results for mode in modes]
    lines = ["| suite | metric | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for suite in suites:
        picked = (metrics or {}).get(suite) or next(
            k for r in results.values() if suite in r["suites"] for k in r["suites"][suite])
        for metric in [picked] if isinstance(picked, str) else picked:
            lines.append(_stages_row(results, modes, suite, metric))
    return "\n".join(lines) + "\n"


def _stages_row(results: dict[str, dict], modes: list[str], suite: str, metric: str) -> str:
    cells = []
    for r in results.values():
        ms = r["suites"].get(suite, {})
        for mode in modes:
            first = mode == r["settings"]["modes"][0]  # a one-mode run keeps plain metric names
            key = f"{mode}/{metric}" if f"{mode}/{metric}" in ms else (metric if first else None)
            cells.append(_fmt(ms.get(key) if key else None))
    return f"| {suite} | {metric} | " + " | ".join(cells) + " |"
