"""`kexa generate`: one completion from a model folder, streamed, with a JSON summary.

    kexa generate --model runs/nano --prompt "Once upon a time" --max-new-tokens 64 --temperature 0.8 \
        --top-p 0.95 [--top-k 50] [--speculative [K]] [--dtype bfloat16] [--seed 0] [--chat] [--compile] [--json]

The prompt is encoded as `Tokenizer.encode` does (no special tokens added) unless `--chat` asks for
the chat template (a single user turn; `--no-think` for the non-reasoning prompt). Generation stops at
the tokenizer's EOS (`<|endofturn|>`), the config's EOS, or --max-new-tokens. With `--json` nothing
is streamed and the last stdout line is one JSON object:
    {"text", "token_ids" (new tokens), "prompt_tokens", "new_tokens", "finish_reason",
     "tokens_per_s", "decode_tokens_per_s", "acceptance_rate" (null without --speculative),
     "acceptance_per_position", "mean_accepted_length", "speculative", "interrupted"}
Bad input (empty prompt, prompt longer than the model's context, invalid sampling values, a folder
that is not a model, a broken config.json, truncated weights, a tokenizer larger than the model's
vocabulary) -> one clear line on stderr, exit code 2. Arguments are checked before any file is read. Ctrl-C stops the generation cleanly: what was generated is still printed (with
"interrupted": true in JSON mode) and the exit code is 130.

The loading helpers here are shared with `kexa chat` (`kexa.infer.chat`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


from ..cli import UsageError  # bad user input: one line, exit code 2 (shared by every command)


def add_sampling_args(p: argparse.ArgumentParser, temperature: float = 1.0) -> None:
    p.add_argument("--model", required=True, help="model folder (config.json + safetensors + tokenizer files)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy (default %(default)s)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus mass (1 = off; report default 0.95)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--speculative", type=int, nargs="?", const=1, default=0, metavar="K",
                   help="MTP self-speculative decoding with K drafted tokens (1 or 2; bare flag = 1)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step: ~2-3x faster decoding on CPU after a one-time "
                        "compilation of tens of seconds (docs/inference.md)")


def load(args) -> tuple:
    """Model, tokenizer, engine from a folder; every failure becomes a UsageError naming the file.
    The model is read first: a broken config.json or truncated weights is the more useful message."""
    from ..config import ConfigError
    from ..model.transformer import KExaone
    from ..model.hf import CheckpointError
    from ..tokenizer import Tokenizer
    from .engine import Engine

    folder = Path(args.model)
    if not folder.is_dir():
        raise UsageError(f"--model {folder}: not a directory (expected a model folder with config.json)")
    if not (folder / "config.json").exists():
        raise UsageError(f"{folder} is not a kexa/HF model folder: config.json is missing")
    try:
        model = KExaone.from_pretrained(folder, dtype=DTYPES[args.dtype], device=args.device)
    except (CheckpointError, ConfigError, OSError) as e:
        raise UsageError(f"cannot load a model from {folder}: {e}") from e
    tok_dir = Path(args.tokenizer) if args.tokenizer else folder
    if not (tok_dir / "tokenizer.json").exists():
        raise UsageError(f"no tokenizer.json in {tok_dir}: save the tokenizer beside the model "
                         f"(Tokenizer.save_pretrained) or pass --tokenizer DIR")
    try:
        tok = Tokenizer.from_pretrained(tok_dir)
    except Exception as e:  # tokenizers raises its own (untyped) exception on a malformed file
        raise UsageError(f"cannot load the tokenizer in {tok_dir}: {e}") from e
    if tok.vocab_size > model.config.vocab_size:
        raise UsageError(f"tokenizer in {tok_dir} has {tok.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size}: they do not belong together")
    return model, tok, Engine(model, compile=getattr(args, "compile", False))  # `kexa eval niah` has no --compile


def check_sampling_args(args) -> None:
    """Validate the sampling arguments before any file is touched (stop tokens come later, from the
    tokenizer and config): `--max-new-tokens -3` fails in milliseconds, not after loading a model."""
    from .sampling import SamplingParams

    if args.speculative not in (0, 1, 2):
        raise UsageError(f"--speculative takes 1 or 2 drafted tokens, got {args.speculative}")
    try:
        SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                       top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from e


def sampling_params(args, tok, model):
    """SamplingParams from the arguments; stops at the tokenizer's and the config's EOS."""
    from .sampling import SamplingParams

    stops = tuple(sorted({i for i in (tok.eos_id, model.config.eos_token_id) if i is not None}))
    try:
        return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, repetition_penalty=args.repetition_penalty,
                              stop_token_ids=stops, seed=args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from e


class TextStream:
    """Incremental detokenisation: decode the whole id list, emit only the new, complete text
    (a trailing U+FFFD is a multi-byte character still being formed and waits for its next token)."""

    def __init__(self, tok):
        self.tok, self.ids, self.text = tok, [], ""

    def push(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.text = text[len(self.text):], text
        return new


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kexa generate", description="generate text from a kexa model folder")
    add_sampling_args(p)
    p.add_argument("--prompt", required=True, help="prompt text (encoded without special tokens)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template as a user turn")
    p.add_argument("--no-think", action="store_true", help="with --chat: non-reasoning prompt (empty think block)")
    p.add_argument("--json", action="store_true", help="print only one JSON summary line")
    return p


def run(args) -> int:
    from .engine import GenerationError

    if not args.prompt or not args.prompt.strip():
        raise UsageError("--prompt is empty: give some text to continue")
    check_sampling_args(args)
    model, tok, engine = load(args)
    params = sampling_params(args, tok, model)
    if args.chat:
        ids = tok.encode_chat([{"role": "user", "content": args.prompt}], enable_thinking=not args.no_think,
                              add_generation_prompt=True).ids
    else:
        ids = tok.encode(args.prompt)
    try:
        generation = engine.stream([ids], params, speculative=args.speculative)
    except GenerationError as e:
        raise UsageError(str(e)) from e
    stream, interrupted = TextStream(tok), False
    try:
        for step in generation:
            piece = stream.push(step.tokens[0])
            if piece and not args.json:
                print(piece, end="", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    new_ids = generation.token_ids[0]
    stats = generation.stats
    if not args.json:
        print(flush=True)
        print(f"[{stats.new_tokens} tokens, {stats.tokens_per_s:.1f} tok/s"
              + (f", acceptance {stats.acceptance_rate:.2f}" if stats.acceptance_rate is not None else "")
              + (", interrupted" if interrupted else "") + "]", file=sys.stderr)
    else:
        print(json.dumps({
            "text": tok.decode(new_ids), "token_ids": new_ids, "prompt_tokens": len(ids), "new_tokens": len(new_ids),
            "finish_reason": "interrupted" if interrupted else generation.finish_reasons[0],
            "tokens_per_s": round(stats.tokens_per_s, 3), "decode_tokens_per_s": round(stats.decode_tokens_per_s, 3),
            "acceptance_rate": stats.acceptance_rate if args.speculative else None,
            "acceptance_per_position": stats.acceptance_per_position if args.speculative else None,
            "mean_accepted_length": stats.mean_accepted_length if args.speculative else None,
            "speculative": args.speculative, "interrupted": interrupted}, ensure_ascii=False))
    return 130 if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"kexa generate: error: {e}", file=sys.stderr)
        return 2
