"""Synthetic, verifiable tool-use environments (K-EXAONE report §3.3): task files, their SQLite worlds, the
pass check, the scripted reference solver and the solvability filter.

A task (one line of tasks.jsonl; JSON all through, so SFT, RL and evaluation read the same file):

    {"id", "domain", "lang", "type", "source": "program" | "llm",
     "split": "train" | "heldout",           # kexa.tasks' stable hash split of the goal (20% held out)
     "instruction": str,                     # what the agent is asked, in the task's language
     "tools": [OpenAI tool declarations],    # the domain's typed functions (kexa.agent.tools)
     "state": {table: [[row], ...]},         # the initial world, loaded into an in-memory SQLite
     "goal": {...},                          # the structured form of the instruction (for the solver)
     "check": {"state": [{"sql", "expected"}], "answer": {"numbers": [...]}}}

`check_task(task, db, answer)` passes when every state query returns exactly its expected rows on the
final world (the intended change happened and nothing else did) and every expected number occurs in
the final answer. RL reward = that bool; evaluation = its mean.

Solvability filter (`screen`): a task is dropped as **ambiguous** when its criterion admits several
answers (criterion or solver raise `Ambiguous`) or is met by doing nothing (the check passes on the
untouched world with an empty answer), and as **unsolvable** when it has no solution or the reference
solver, acting only through the tools, does not pass the check. Counts come back with the tasks.

    tasks, counts = generate(n=100, seed=0)          # counts: drawn, kept, unsolvable, ambiguous
    env = Environment(tasks[0]); box = env.toolbox(); ...; env.check(answer)
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from pathlib import Path

from ..tasks.base import split_of
from .domains import DOMAINS, LANGS, Ambiguous, Domain, Unsolvable
from .tools import ToolBox, function_schema

REQUIRED = ("id", "domain", "lang", "type", "instruction", "tools", "state", "goal", "check")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")


class TaskError(ValueError):
    """A task record that cannot be loaded: one line of why."""


class ToolFailed(Exception):
    """The reference solver got an error result from a tool."""


def tool_schemas(domain: Domain) -> list[dict]:
    return [function_schema(fn, skip=("db",)) for fn in domain.tools]


def make_task(domain: str, lang: str, type_: str, state: dict, goal: dict, task_id: str,
              source: str = "program") -> dict:
    """A task record from a world and a goal; raises Unsolvable / Ambiguous from the criterion."""
    d = DOMAINS[domain]
    g = d.goal(type_)
    identity = f"agent:{domain}:{type_}:{json.dumps(goal, sort_keys=True, ensure_ascii=False)}"
    return {"id": task_id, "domain": domain, "lang": lang, "type": type_, "source": source, "split": split_of(identity),
            "instruction": g.instruction[lang].format(**goal), "tools": tool_schemas(d), "state": state,
            "goal": goal, "check": g.criterion(goal, state)}


def validate_task(task, where: str = "task") -> dict:
    if not isinstance(task, dict):
        raise TaskError(f"{where}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in task]
    if missing:
        raise TaskError(f"{where}: missing fields {missing}")
    if task["domain"] not in DOMAINS:
        raise TaskError(f"{where}: unknown domain {task['domain']!r} (known: {sorted(DOMAINS)})")
    if task["lang"] not in LANGS:
        raise TaskError(f"{where}: unknown language {task['lang']!r} (known: {list(LANGS)})")
    tables = DOMAINS[task["domain"]].tables
    for table, rows in task["state"].items():
        if table not in tables or not isinstance(rows, list) or any(
                not isinstance(r, list) or len(r) != len(tables[table]) for r in rows):
            raise TaskError(f"{where}: state table {table!r} must be one of {sorted(tables)} with rows of "
                            f"{len(tables.get(table, []))} values")
    return task


def load_tasks(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: no such task file")
    tasks = []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            tasks.append(validate_task(json.loads(line), f"{path}:{n}"))
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}:{n}: not valid JSON: {e.msg}") from e
    if not tasks:
        raise TaskError(f"{path}: holds no tasks")
    return tasks


class Environment:
    """One task's world: an in-memory SQLite loaded with the initial state, and its tools bound to it."""

    def __init__(self, task: dict):
        self.task, self.domain = task, DOMAINS[task["domain"]]
        self.db = sqlite3.connect(":memory:", check_same_thread=False)  # tools run on a worker thread
        for table, cols in self.domain.tables.items():
            self.db.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in cols)})")
            rows = task["state"].get(table, [])
            if rows:
                self.db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cols))})", rows)
        self.db.commit()

    def toolbox(self, timeout_s: float = 10.0) -> ToolBox:
        box = ToolBox(timeout_s)
        for fn in self.domain.tools:
            box.add(fn, bind={"db": self.db})
        return box

    def check(self, answer: str) -> bool:
        return check_task(self.task, self.db, answer)


def _numbers(text: str) -> list[float]:
    out = []
    for m in _NUMBER.findall(text or ""):
        s = m.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", m) else m.replace(",", ".")
        try:
            out.append(float(s))
        except ValueError:
            pass
    return out


def check_task(task: dict, db: sqlite3.Connection, answer: str) -> bool:
    check = task["check"]
    for q in check.get("state", []):
        rows = [list(r) for r in db.execute(q["sql"]).fetchall()]
        if rows != q["expected"]:
            return False
    found = _numbers(answer)
    return all(any(abs(x - float(y)) < 1e-6 for x in found) for y in check.get("answer", {}).get("numbers", []))


def solve(task: dict) -> tuple[bool, str, list[dict]]:
    """Run the reference solver on a fresh world: (passed, answer, dialogue). The dialogue is the solver's
    trajectory as chat messages (one assistant turn per call, its result as a tool turn, then the answer):
    tool-use SFT data in TRL's `messages` shape. Raises Ambiguous / Unsolvable / ToolFailed."""
    env = Environment(task)
    box = env.toolbox()
    messages = [{"role": "user", "content": task["instruction"]}]

    def call(name, **arguments):
        result = box.call(name, arguments)
        cid = f"call-{len(messages)}"
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}]})
        messages.append({"role": "tool", "tool_call_id": cid, "content": result.content})
        if result.error:
            raise ToolFailed(result.content)
        return json.loads(result.content)

    answer = DOMAINS[task["domain"]].goal(task["type"]).solve(call, task["goal"], task["lang"])
    messages.append({"role": "assistant", "content": answer})
    return env.check(answer), answer, messages


def screen(task: dict) -> tuple[str, list[dict] | None]:
    """("ok", solver dialogue) | ("ambiguous" | "unsolvable", None)."""
    if Environment(task).check(""):
        return "ambiguous", None  # met by doing nothing: the check does not tell success from inaction
    try:
        passed, _, dialogue = solve(task)
    except Ambiguous:
        return "ambiguous", None
    except (Unsolvable, ToolFailed):
        return "unsolvable", None
    return ("ok", dialogue) if passed else ("unsolvable", None)


def draw_task(rng: random.Random, domain: str, lang: str, task_id: str) -> dict:
    """One programmatic task (may raise Unsolvable / Ambiguous from its criterion)."""
    d = DOMAINS[domain]
    g = rng.choice(d.goals)
    state = d.populate(rng, lang)
    return make_task(domain, lang, g.name, state, g.draw(rng, state, lang), task_id)


def generate(n: int, seed: int, propose=None, max_draws: int | None = None) -> tuple[list[dict], dict, list[list[dict]]]:
    """n screened tasks, balanced over domains x languages: (tasks, counts, solver dialogues).
    `propose(rng, domain, lang, task_id) -> task` replaces the programmatic draw (the LLM path). Stops after
    `max_draws` proposals (default 50n + 100) with fewer tasks; the caller sees it in counts["kept"]."""
    rng = random.Random(seed)
    propose = propose or draw_task
    max_draws = 50 * n + 100 if max_draws is None else max_draws
    counts = {"drawn": 0, "kept": 0, "unsolvable": 0, "ambiguous": 0, "invalid": 0}
    tasks, dialogues = [], []
    combos = [(d, lang) for lang in LANGS for d in DOMAINS]
    while len(tasks) < n and counts["drawn"] < max_draws:
        domain, lang = combos[len(tasks) % len(combos)]
        counts["drawn"] += 1
        task_id = f"{domain}-{lang}-{seed}-{counts['drawn']}"
        try:
            task = propose(rng, domain, lang, task_id)
        except Ambiguous:
            counts["ambiguous"] += 1
            continue
        except Unsolvable:
            counts["unsolvable"] += 1
            continue
        except TaskError:
            counts["invalid"] += 1
            continue
        verdict, dialogue = screen(task)
        if verdict != "ok":
            counts[verdict] += 1
            continue
        counts["kept"] += 1
        tasks.append(task)
        dialogues.append(dialogue)
    return tasks, counts, dialogues


def write_tasks(out: str | Path, tasks: list[dict], counts: dict, dialogues: list[list[dict]]) -> Path:
    """DIR/tasks.jsonl (the tasks), DIR/sft.jsonl (solver dialogues: messages + tools), DIR/stats.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tasks.jsonl", "w", encoding="utf-8") as f:
        for t in tasks:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    with open(out / "sft.jsonl", "w", encoding="utf-8") as f:
        for t, d in zip(tasks, dialogues):
            f.write(json.dumps({"id": t["id"], "messages": d, "tools": t["tools"]}, ensure_ascii=False) + "\n")
    (out / "stats.json").write_text(json.dumps(counts, indent=1) + "\n", "utf-8")
    return out / "tasks.jsonl"


def verify(tasks: list[dict]) -> dict:
    """Re-run the reference solver on every task: pass rate and the ids that failed."""
    failed = []
    for t in tasks:
        try:
            ok = solve(t)[0]
        except (Ambiguous, Unsolvable, ToolFailed):
            ok = False
        if not ok:
            failed.append(t["id"])
    return {"pass_rate": (len(tasks) - len(failed)) / len(tasks), "n": len(tasks), "failed": failed}

