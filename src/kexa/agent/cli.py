"""`kexa agent`: synthetic environments and agent runs.

    kexa agent envs --out DIR --n N --seed S [--llm URL]   # DIR/tasks.jsonl, sft.jsonl, stats.json
    kexa agent envs --verify DIR                          # last line: {"pass_rate": 1.0, "n": N, ...}
    kexa agent run (--endpoint URL | --model DIR) --tasks DIR/tasks.jsonl --out RUN
                   [--compress-every N] [--summarize-over T] [--max-steps M]   # RUN/trajectories.jsonl, summary.json
                   [--collection pages.jsonl] [--split heldout] [--tool-choice required] [--limit N]
    kexa agent replay --run RUN --tasks DIR/tasks.jsonl   # last line: {"n", "identical"}

Bad input (missing or malformed task file, unreachable endpoint) -> one line on stderr, exit code 2.
A run writes each trajectory as soon as its task ends, so an interrupted run keeps what it did.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from .envs import Environment, TaskError, generate, load_tasks, verify, write_tasks
from .loop import Agent, AgentConfig, replay


class UsageError(Exception):
    pass


def _envs(args) -> dict:
    if args.verify:
        return verify(load_tasks(Path(args.verify) / "tasks.jsonl"))
    if not args.out:
        raise UsageError("envs needs --out DIR (or --verify DIR)")
    if args.n < 1:
        raise UsageError("--n must be >= 1")
    propose = None
    if args.llm:
        from .client import EndpointClient
        from .llm_envs import LLMProposer

        propose = LLMProposer(EndpointClient(args.llm), max_tokens=args.llm_max_tokens)
    tasks, counts, dialogues = generate(args.n, args.seed, propose, args.max_draws)
    path = write_tasks(args.out, tasks, counts, dialogues)
    print(f"kexa agent envs: wrote {len(tasks)} tasks to {path}", file=sys.stderr)
    if len(tasks) < args.n:
        print(f"kexa agent envs: error: only {len(tasks)} of {args.n} tasks passed the filter in {counts['drawn']} "
              f"draws ({counts['invalid']} invalid, {counts['unsolvable']} unsolvable, {counts['ambiguous']} "
              f"ambiguous); the kept ones are written", file=sys.stderr)
    return {"n": len(tasks), **counts, "tasks": str(path)}


def _client(args):
    from .client import EndpointClient, EngineClient

    if bool(args.endpoint) == bool(args.model):
        raise UsageError("give exactly one of --endpoint URL and --model DIR")
    if args.endpoint:
        return EndpointClient(args.endpoint, model=args.served_model, api_key=args.api_key)
    from ..infer.cli import UsageError as LoadError, load

    args.tokenizer, args.dtype, args.device = None, "float32", "cpu"
    try:
        _, tok, engine = load(args)
    except LoadError as e:
        raise UsageError(str(e)) from e
    return EngineClient(engine, tok)


def toolbox_for(env: Environment, collection=None):
    """make_toolbox for one task: the environment's tools, plus search/open over a page collection."""
    def make(summarize):
        box = env.toolbox()
        if collection is not None:
            from .builtin import search_tools

            for fn in search_tools(collection, summarize):
                box.add(fn)
        return box
    return make


def run_tasks(client, tasks: list[dict], out: Path, config: AgentConfig, collection=None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with open(out / "trajectories.jsonl", "w", encoding="utf-8") as f:
        for task in tasks:
            env = Environment(task)
            record = Agent(client, config).run(task["instruction"], toolbox_for(env, collection))
            record.update(id=task["id"], domain=task["domain"], lang=task["lang"], passed=env.check(record["answer"]))
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            records.append(record)
            print(f"{task['id']}: {'pass' if record['passed'] else 'fail'} after {record['steps']} steps "
                  f"({record['finish']})", file=sys.stderr)
    summary = {
        "n": len(records), "pass_rate": sum(r["passed"] for r in records) / len(records),
        "steps_mean": statistics.fmean(r["steps"] for r in records),
        "peak_prompt_tokens": max(r["peak_prompt_tokens"] for r in records),
        "peak_prompt_tokens_mean": statistics.fmean(r["peak_prompt_tokens"] for r in records),
        "peak_subagent_prompt_tokens": max(r["peak_subagent_prompt_tokens"] for r in records),
        "compressions": sum(r["compressions"] for r in records),
        "compression_fallbacks": sum(r["compression_fallbacks"] for r in records),
        "summaries": sum(r["summaries"] for r in records),
        "errors": sum(r["finish"] == "error" for r in records),
        "finish": {k: sum(r["finish"] == k for r in records) for k in ("answer", "max_steps", "error")},
        "config": {k: v for k, v in vars(config).items() if k != "system"},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", "utf-8")
    return summary


def _collection(path):
    if not path:
        return None
    from .builtin import Collection

    try:
        return Collection.from_jsonl(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"--collection {path}: {e}") from e


def _run(args) -> dict:
    tasks = [t for t in load_tasks(args.tasks) if args.split in (None, t.get("split"))][: args.limit or None]
    if not tasks:
        raise UsageError(f"{args.tasks}: no task in split {args.split!r}")
    if args.max_steps < 1 or args.compress_every < 0 or args.summarize_over < 0:
        raise UsageError("--max-steps must be >= 1, --compress-every and --summarize-over >= 0")
    config = AgentConfig(max_steps=args.max_steps, compress_every=args.compress_every,
                         summarize_over=args.summarize_over, keep_last=args.keep_last,
                         temperature=args.temperature, max_tokens=args.max_tokens, tool_choice=args.tool_choice,
                         sub_max_tokens=args.sub_max_tokens)
    collection = _collection(args.collection)
    return run_tasks(_client(args), tasks, Path(args.out), config, collection)


def _replay(args) -> dict:
    tasks = {t["id"]: t for t in load_tasks(args.tasks)}
    collection = _collection(args.collection)
    path = Path(args.run) / "trajectories.jsonl"
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    n = same = 0
    for line_no, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            task = tasks[record["id"]]
        except (json.JSONDecodeError, KeyError) as e:
            raise UsageError(f"{path}:{line_no}: not a trajectory of these tasks ({e})") from e
        n += 1
        same += replay(record, toolbox_for(Environment(task), collection))
    return {"n": n, "identical": same}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kexa agent", description="tool-use agents and synthetic environments")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("envs", help="generate (--out) or verify (--verify) synthetic tool-use tasks")
    e.add_argument("--out", default=None)
    e.add_argument("--n", type=int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--verify", default=None, metavar="DIR", help="re-run the reference solver on DIR/tasks.jsonl")
    e.add_argument("--llm", default=None, metavar="URL", help="propose worlds with the model at this endpoint")
    e.add_argument("--llm-max-tokens", type=int, default=2048, help="reply length of the proposing model")
    e.add_argument("--max-draws", type=int, default=None, help="give up after this many proposals (default 50n+100)")
    r = sub.add_parser("run", help="run the agent on a task file")
    r.add_argument("--endpoint", default=None, help="OpenAI-compatible base URL (kexa serve, vLLM, SGLang)")
    r.add_argument("--model", default=None, help="a model folder run in-process instead of an endpoint")
    r.add_argument("--served-model", default=None, help="model name at the endpoint (default: its first)")
    r.add_argument("--api-key", default="unused")
    r.add_argument("--tasks", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--compress-every", type=int, default=0)
    r.add_argument("--summarize-over", type=int, default=0)
    r.add_argument("--keep-last", type=int, default=4)
    r.add_argument("--max-steps", type=int, default=20)
    r.add_argument("--max-tokens", type=int, default=512)
    r.add_argument("--sub-max-tokens", type=int, default=1024, help="reply length of the summarizer and compressor")
    r.add_argument("--temperature", type=float, default=0.0)
    r.add_argument("--tool-choice", choices=("auto", "required"), default="auto",
                   help="required: every turn must call a tool (the run ends at --max-steps)")
    r.add_argument("--limit", type=int, default=0, help="only the first N tasks")
    r.add_argument("--split", choices=("train", "heldout"), default=None, help="only the tasks of this split")
    r.add_argument("--collection", default=None, metavar="JSONL",
                   help="pages ({id, title, text} per line) for extra search/open tools; long pages are summarised")
    y = sub.add_parser("replay", help="re-run logged trajectories and compare them event by event")
    y.add_argument("--run", required=True)
    y.add_argument("--tasks", required=True)
    y.add_argument("--collection", default=None, metavar="JSONL", help="the collection the run used, if any")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = {"envs": _envs, "run": _run, "replay": _replay}[args.cmd](args)
    except (UsageError, TaskError) as e:
        print(f"kexa agent: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False))
    return 1 if args.cmd == "envs" and not args.verify and result["n"] < args.n else 0


if __name__ == "__main__":
    sys.exit(main())
