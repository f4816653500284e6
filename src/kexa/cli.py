"""The `kexa` command: one sub-command per stage, each a thin shell over library functions.

Sub-commands are dispatched lazily (`kexa pretrain …` imports only the training stack): each
entry of COMMANDS names a module exposing `main(argv: list[str]) -> int | None`.

    kexa info --preset k-exaone-236b --json
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("kexa.model.info", "parameter counts of a preset or model folder (meta device)"),
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
    "export": ("kexa.train.export", "export a training checkpoint as a servable HF folder (bf16, generation_config)"),
    "plan": ("kexa.train.plan", "memory plan of a recipe per GPU under its FSDP x EP layout (meta device)"),
    "speedrun": ("kexa.speedrun", "the whole recipe at nano scale (--quick: tiny) and its report card"),
    "report": ("kexa.report", "regenerate a speedrun's report.md and plots from its logs"),
}


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
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return int(module.main(argv[1:]) or 0)
    except KeyboardInterrupt:
        print("\nkexa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
