"""The `kexa` command: one sub-command per stage, each a thin shell over library functions.

Sub-commands are dispatched lazily (`kexa pretrain …` imports only the training stack): each
entry of COMMANDS names a module exposing `main(argv: list[str]) -> int | None`.

Errors are one line on stderr and a consistent exit code, whichever command raised them:
    2  usage: bad arguments or bad input (argparse, `UsageError`, an invalid config/recipe/model
       folder/shard/text file, a missing input path) -- reported before the work starts where possible
    1  runtime: anything else that fails while the command works (set KEXA_DEBUG=1 for the traceback)
  130  interrupted (Ctrl-C)

    kexa info --preset k-exaone-236b --json
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("kexa.info", "parameter counts of a preset or model folder (meta device)"),
    "pretrain": ("kexa.train.pretrain", "pre-train from a TOML recipe: Muon + WSD, MoE balancing, MTP, curriculum, resume"),
    "tokenizer": ("kexa.tokenizer.cli", "train/inspect the SuperBPE tokenizer: train, stats, encode, decode"),
    "data": ("kexa.data.cli", "build the multilingual corpus (ko/en/es/de/ja/vi/code/stem) from offline sources"),
    "generate": ("kexa.infer.cli", "generate text from a model folder (streaming, --speculative MTP drafts, --json)"),
    "chat": ("kexa.infer.chat", "interactive chat with the chat template, reasoning on/off, streaming"),
    "eval": ("kexa.eval.cli", "evaluate: niah (needle in a haystack, lengths x depths, heat map), humaneval (pass@k in the sandbox)"),
    "extend": ("kexa.train.extend", "staged context extension gated by NIAH and short-context loss"),
    "sft": ("kexa.train.sft", "supervised fine-tuning on chat data: reasoning on/off, packed, assistant-only loss, LoRA"),
    "rl": ("kexa.train.rl", "RL with verifiable rewards (AGAPO): batched rollouts, truncated IS, frozen router"),
    "preference": ("kexa.train.preference", "preference learning (GROUPER): group rollouts, rule + rubric rewards, frozen router"),
    "serve": ("kexa.serve.cli", "OpenAI-compatible HTTP server with continuous batching and a chat page"),
    "agent": ("kexa.agent.cli", "tool-use agent (summarizer, trajectory compressor) and synthetic verifiable environments"),
    "export": ("kexa.train.export", "export a training checkpoint as a servable HF folder (bf16, generation_config)"),
    "plan": ("kexa.train.plan", "memory plan of a recipe per GPU under its FSDP x EP layout (meta device)"),
    "speedrun": ("kexa.speedrun", "the whole recipe at nano scale (--quick: tiny) and its report card"),
    "report": ("kexa.report", "regenerate a speedrun's report.md and plots from its logs"),
}


class UsageError(Exception):
    """Bad user input (arguments, files, folders): one line on stderr, exit code 2."""


# exception classes that mean "the input is wrong", named by module so that none is imported here: an
# exception of a class whose module was never imported cannot have been raised
INPUT_ERRORS = (("kexa.config", "ConfigError"), ("kexa.train.recipe", "RecipeError"),
                ("kexa.model.hf", "CheckpointError"), ("kexa.data.shards", "ShardError"),
                ("kexa.tokenizer.textfiles", "InvalidUTF8Error"), ("kexa.infer.engine", "GenerationError"))


def exit_code(e: BaseException) -> int:
    """2 for bad input, 1 for a failure while working."""
    if isinstance(e, (UsageError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return 2
    for module, name in INPUT_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return 2
    return 1


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: kexa <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "run `kexa <command> --help` for the options of one command"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"kexa: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    name = COMMANDS[argv[0]][0]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not name.startswith(e.name):
            raise  # a missing dependency inside the module: a real error, with its traceback
        print(f"kexa {argv[0]}: not built yet in this checkout ({name} does not exist)", file=sys.stderr)
        return 1
    try:
        return int(module.main(argv[1:]) or 0)
    except KeyboardInterrupt:
        print("\nkexa: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, not a traceback; KEXA_DEBUG=1 re-raises for debugging
        if os.environ.get("KEXA_DEBUG"):
            raise
        code = exit_code(e)
        kind = "" if code == 2 else f"{type(e).__name__}: "
        message = str(e).strip().replace("\n", " ") or type(e).__name__
        print(f"kexa {argv[0]}: error: {kind}{message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    # run as `python -m kexa.cli`: dispatch through the imported module so that the UsageError the
    # sub-commands raise (kexa.cli.UsageError) is the class exit_code() checks, not __main__'s twin
    sys.exit(importlib.import_module("kexa.cli").main())
