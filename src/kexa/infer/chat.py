"""`kexa chat`: an interactive terminal chat on the K-EXAONE chat template, streamed.

    kexa chat --model runs/nano [--no-think] [--system "You are terse."] [--temperature 1.0] [--speculative]

Each user line becomes a user turn; the conversation is rendered with the tokenizer's chat template
(`Tokenizer.encode_chat(..., add_generation_prompt=True)`) and the reply streams as it is generated.
In reasoning mode (K-EXAONE's default, `enable_thinking=True`) the prompt ends inside `<think>`, so the
reply starts with reasoning: it is shown apart from the answer (dimmed on a terminal, under a
"[thinking]" header otherwise) and dropped from the history of later turns, as the template does.
The finished reply is parsed with `parse_response` into reasoning / content / tool calls.

A conversation longer than the model's context keeps going: before each reply the oldest turns
(never the system prompt) are dropped until the prompt leaves room for the reply
(`min(--max-new-tokens, context / 2)` tokens), and the chat says how many were dropped; a single
message too long to fit is refused with a message and not kept.

In-chat commands: /think on|off, /reset, /exit. Ctrl-C during a reply stops that reply and keeps the
chat; Ctrl-C or Ctrl-D at the prompt leaves. Model and tokenizer errors exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, TextIO

from .cli import TextStream, UsageError, add_sampling_args, check_sampling_args, load, sampling_params

THINK_CLOSE = "</think>"
END_OF_TURN = "<|endofturn|>"


class ReplyPrinter:
    """Streams a reply, separating the reasoning (before `</think>`) from the answer."""

    def __init__(self, out: TextIO, thinking: bool):
        self.out, self.in_thought, self.pending = out, thinking, ""
        self.dim = out.isatty()
        if thinking:
            self._write("\x1b[2m" if self.dim else "[thinking]\n")

    def _write(self, s: str) -> None:
        self.out.write(s)
        self.out.flush()

    def feed(self, text: str) -> None:
        if not self.in_thought:
            self._write(text.replace(END_OF_TURN, ""))
            return
        self.pending += text
        if THINK_CLOSE in self.pending:
            thought, answer = self.pending.split(THINK_CLOSE, 1)
            self._write(thought + ("\x1b[0m\n" if self.dim else "\n[answer]\n"))
            self.in_thought, self.pending = False, ""
            self.feed(answer.lstrip("\n"))
        else:  # hold back a tail that might be the start of "</think>"
            cut = max(0, len(self.pending) - len(THINK_CLOSE))
            self._write(self.pending[:cut])
            self.pending = self.pending[cut:]

    def close(self) -> None:
        if self.in_thought:
            self._write(self.pending + ("\x1b[0m" if self.dim else ""))
        self._write("\n")


def fit_to_context(tok, messages: list[dict], n_base: int, thinking: bool, budget: int) -> tuple[list[int] | None, int]:
    """Drop the oldest turns after the first `n_base` messages (the system prompt) until the rendered
    prompt has at most `budget` tokens. The kept history starts at a user turn. Returns the prompt ids
    (None when even the last user message alone does not fit) and how many messages were dropped;
    `messages` is trimmed in place."""
    dropped = 0
    while True:
        ids = tok.encode_chat(messages, enable_thinking=thinking, add_generation_prompt=True).ids
        if len(ids) <= budget:
            return ids, dropped
        turns = messages[n_base:]
        if len(turns) <= 1:  # only the new user message is left, and it is too long
            return None, dropped
        cut = 1 + next((i for i, m in enumerate(turns[1:]) if m["role"] == "user"), len(turns) - 1)
        del messages[n_base:n_base + cut]
        dropped += cut


def chat_loop(engine, tok, params, speculative: int, thinking: bool, system: str | None,
              read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> list[dict]:
    """Run the conversation until /exit or end of input; returns the message history."""
    from ..tokenizer.chat import parse_response

    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    while True:
        try:
            line = read("you> ")
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return messages
        cmd = line.strip()
        if not cmd:
            continue
        if cmd in ("/exit", "/quit"):
            return messages
        if cmd == "/reset":
            messages = list(base)
            out.write("(conversation cleared)\n")
            continue
        if cmd.startswith("/think"):
            arg = cmd.split()[1:] or [""]
            if arg[0] not in ("on", "off"):
                out.write("usage: /think on|off\n")
                continue
            thinking = arg[0] == "on"
            out.write(f"(reasoning {'on' if thinking else 'off'})\n")
            continue
        messages.append({"role": "user", "content": line})
        context = engine.config.max_position_embeddings
        # the prompt must leave room for a reply (the engine refuses a prompt that fills the context)
        ids, dropped = fit_to_context(tok, messages, len(base), thinking,
                                      context - min(params.max_new_tokens, context // 2))
        if ids is None:
            messages.pop()
            out.write(f"(message not sent: too long for the model's context of {context} tokens; "
                      f"shorten it or /reset)\n")
            continue
        if dropped:
            out.write(f"(context full: dropped the {dropped} oldest messages)\n")
        generation = engine.stream([ids], params, speculative=speculative)
        stream, printer = TextStream(tok), ReplyPrinter(out, thinking)
        out.write("kexa> ")
        try:
            for step in generation:
                printer.feed(stream.push(step.tokens[0]))
        except KeyboardInterrupt:
            out.write(" [stopped]")
        printer.close()
        reply = tok.decode(generation.token_ids[0])
        if thinking and THINK_CLOSE not in reply:
            reply = reply + "\n" + THINK_CLOSE  # an unfinished thought is still reasoning, not answer
        parsed = parse_response(reply)
        messages.append({k: v for k, v in parsed.items() if v or k in ("role", "content")})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kexa chat", description="interactive chat with a kexa model folder")
    add_sampling_args(p)
    p.add_argument("--no-think", action="store_true", help="start with reasoning off (toggle with /think on|off)")
    p.add_argument("--system", default=None, help="system prompt")
    args = p.parse_args(argv)
    try:
        check_sampling_args(args)
        model, tok, engine = load(args)
        params = sampling_params(args, tok, model)
    except UsageError as e:
        print(f"kexa chat: error: {e}", file=sys.stderr)
        return 2
    print("kexa chat: /think on|off, /reset, /exit (Ctrl-C stops a reply)", file=sys.stderr)
    chat_loop(engine, tok, params, args.speculative, not args.no_think, args.system)
    return 0
