"""The agent's chat client: one small protocol, three implementations.

    reply = client.chat(messages, tools, temperature=0, max_tokens=256)
    reply.message      # {"role": "assistant", "content", "reasoning_content", "tool_calls": [OpenAI shape]}
    reply.prompt_tokens

- `EndpointClient(url)`: any OpenAI-compatible chat endpoint (`kexa serve`, vLLM/SGLang serving a
  real K-EXAONE), through the official `openai` package; token counts come from the response's
  `usage`, and `count_tokens` from the server's `/tokenize` (vLLM and `kexa serve` both have it).
- `EngineClient(engine, tokenizer)`: kexa's in-process engine; the prompt is the chat template's
  rendering and the reply is split by the server's parser (`kexa.serve.reply.split_reply`), so both
  paths see identical messages.
- `ReplayClient(replies)`: hands back logged replies in order (`kexa.agent.loop.replay`).
- `ScriptedClient(policy, tokenizer)`: a Python policy (scripted baselines, tests, benchmarks); prompt
  tokens are counted on the chat template's rendering.

Tool-call arguments are kept as OpenAI carries them: a JSON *string*. A `<tool_call>` the parser
could not read stays in `content` (the template's rule); the loop turns it into an error result.
Folding into the shared `kexa.client` later: that module's chat method only has to return this
`Reply` (or the loop adapts its `message`/`usage`); nothing else here depends on the transport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol


class ClientError(RuntimeError):
    """The model could not be asked (HTTP error, context overflow, engine refusal): one line of why."""


@dataclass
class Reply:
    message: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class ChatClient(Protocol):
    def chat(self, messages: list[dict], tools: list[dict] | None = None, **sampling) -> Reply: ...

    def count_tokens(self, text: str) -> int: ...


def _call(call_id: str, name: str, arguments) -> dict:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def wire_messages(messages: list[dict]) -> list[dict]:
    """Messages as an OpenAI server accepts them (no None-valued keys, tool arguments as strings)."""
    out = []
    for m in messages:
        # reasoning stays: K-EXAONE's template shows the reasoning of the turns after the last user message,
        # so a multi-step tool run keeps its chain of thought (kexa serve reads `reasoning_content`)
        d = {k: v for k, v in m.items() if v is not None and not (k == "reasoning_content" and not v)}
        if m.get("tool_calls"):
            d["tool_calls"] = [_call(c.get("id") or f"call-{i}", c["function"]["name"], c["function"]["arguments"])
                               for i, c in enumerate(m["tool_calls"])]
        elif "tool_calls" in d:
            del d["tool_calls"]
        out.append(d)
    return out


class EndpointClient:
    def __init__(self, base_url: str, model: str | None = None, api_key: str = "unused", timeout_s: float = 300.0,
                 enable_thinking: bool = True):
        import openai

        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.openai = openai
        self.api = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.enable_thinking = enable_thinking
        self._model = model
        self._tokenize_ok = True

    @property
    def model(self) -> str:
        if self._model is None:
            try:
                self._model = self.api.models.list().data[0].id
            except self.openai.OpenAIError as e:
                raise ClientError(f"cannot list the models of {self.base_url}: {e}") from e
        return self._model

    def chat(self, messages, tools=None, temperature: float = 0.0, max_tokens: int = 512, **sampling) -> Reply:
        try:
            r = self.api.chat.completions.create(
                model=self.model, messages=wire_messages(messages), tools=tools or self.openai.NOT_GIVEN,
                temperature=temperature, max_tokens=max_tokens,
                extra_body={"chat_template_kwargs": {"enable_thinking": self.enable_thinking}}, **sampling)
        except self.openai.APIStatusError as e:
            try:
                why = e.response.json()["error"]["message"]
            except Exception:  # noqa: BLE001 - a non-JSON error body: its text is the message
                why = e.response.text[:300]
            raise ClientError(f"{self.base_url} answered {e.status_code}: {why}") from e
        except self.openai.OpenAIError as e:
            raise ClientError(f"cannot reach {self.base_url}: {e}") from e
        c = r.choices[0]
        extra = c.message.model_extra or {}
        message = {"role": "assistant", "content": c.message.content or "",
                   "reasoning_content": extra.get("reasoning_content") or extra.get("reasoning") or "",
                   "tool_calls": [_call(t.id, t.function.name, t.function.arguments) for t in c.message.tool_calls or []]}
        usage = r.usage
        return Reply(message, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                     c.finish_reason or "stop")

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the server's tokenizer (`/tokenize`); ~4 characters a token if it has none."""
        if self._tokenize_ok:
            import httpx

            try:
                r = httpx.post(self.base_url[:-3] + "/tokenize", json={"prompt": text}, timeout=30)
                if r.status_code == 200:
                    return int(r.json()["count"])
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            self._tokenize_ok = False
            import warnings

            warnings.warn(f"{self.base_url[:-3]}/tokenize is unavailable: counting ~4 characters per token")
        return max(1, len(text) // 4)


class EngineClient:
    """kexa's in-process engine behind the same protocol (no HTTP)."""

    def __init__(self, engine, tokenizer, enable_thinking: bool = True, max_len: int | None = None):
        self.engine, self.tok, self.enable_thinking = engine, tokenizer, enable_thinking
        self.max_len = max_len or engine.model.config.max_position_embeddings
        self.eos = tuple(sorted({i for i in (tokenizer.eos_id, engine.model.config.eos_token_id) if i is not None}))

    def chat(self, messages, tools=None, temperature: float = 0.0, max_tokens: int = 512, seed: int | None = None,
             tool_choice: str = "auto", **sampling) -> Reply:
        from ..infer.engine import GenerationError
        from ..infer.sampling import SamplingParams
        from ..serve.reply import PLAIN_HEAD, THINKING_HEAD, split_reply
        from ..tokenizer import specials as S

        if tool_choice not in ("auto", "required"):
            raise ClientError(f"tool_choice {tool_choice!r}: the in-process client knows 'auto' and 'required'")
        ids = self.tok.encode_chat(messages, tools=tools, enable_thinking=self.enable_thinking,
                                   add_generation_prompt=True).ids
        forced = ""
        if tool_choice == "required" and tools:  # as `kexa serve` does: write the call's opening tag for the model
            forced = (f"\n{S.THINK_CLOSE}\n\n" if self.enable_thinking else "") + S.TOOL_CALL_OPEN
            ids = ids + self.tok.encode(forced)
        if len(ids) >= self.max_len:
            raise ClientError(f"prompt of {len(ids)} tokens does not fit the context of {self.max_len}")
        params = SamplingParams(max_new_tokens=min(max_tokens, self.max_len - len(ids)), temperature=temperature,
                                stop_token_ids=self.eos, seed=seed, **sampling)
        try:
            result = self.engine.generate([ids], params)
        except GenerationError as e:
            raise ClientError(str(e)) from e
        text = self.tok.decode(result.token_ids[0], skip_special_tokens=True)
        head = THINKING_HEAD if self.enable_thinking else PLAIN_HEAD
        msg = split_reply(head + forced + text, parse_tools=bool(tools))
        message = {"role": "assistant", "content": msg["content"], "reasoning_content": msg["reasoning_content"],
                   "tool_calls": [_call(f"call-{i}", c["function"]["name"], c["function"]["arguments"])
                                  for i, c in enumerate(msg["tool_calls"])]}
        return Reply(message, len(ids), len(result.token_ids[0]), result.finish_reasons[0])

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text))


@dataclass
class ReplayClient:
    """Returns logged replies in order; asking for more than the log holds is an error."""
    replies: list[Reply]
    counter: Any = None  # count_tokens of the original run (a callable), or None: ~4 characters a token
    at: int = field(default=0)

    def chat(self, messages, tools=None, **sampling) -> Reply:
        if self.at >= len(self.replies):
            raise ClientError(f"the log holds {len(self.replies)} model replies; the replay asked for more")
        self.at += 1
        return self.replies[self.at - 1]

    def count_tokens(self, text: str) -> int:
        return self.counter(text) if self.counter else max(1, len(text) // 4)


class ScriptedClient:
    """A policy written in Python behind the same protocol (scripted baselines, tests, benchmarks):
    `policy(messages, tools) -> assistant message`. Prompt tokens are those of the chat template's
    rendering with `tokenizer` (as the engine would see them), or ~4 characters a token without one."""

    def __init__(self, policy, tokenizer=None):
        self.policy, self.tok = policy, tokenizer

    def chat(self, messages, tools=None, **sampling) -> Reply:
        from ..tokenizer.chat import render

        text = render(messages, tools, add_generation_prompt=True)
        message = {"role": "assistant", "content": "", "reasoning_content": "", "tool_calls": [],
                   **self.policy(messages, tools)}
        message["tool_calls"] = [_call(c.get("id") or f"call-{i}", c["function"]["name"], c["function"]["arguments"])
                                 for i, c in enumerate(message["tool_calls"])]
        return Reply(message, self.count_tokens(text), self.count_tokens(message["content"]))

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text)) if self.tok else max(1, len(text) // 4)
