"""One client interface to a model: the in-process engine or any OpenAI-compatible endpoint.

Evaluation (`kexa.eval.harness`) and agents talk to a model only through this interface, so the same
code scores a kexa folder on this machine and a real K-EXAONE served by vLLM or `kexa serve`.

    client = EngineClient.from_folder("runs/nano/model")             # or EndpointClient("http://host:8000/v1")
    replies = client.chat([[{"role": "user", "content": "2+2?"}]], GenParams(max_tokens=64), thinking=True)
    replies[0].content, replies[0].reasoning, replies[0].error     # error: None, or one line saying what failed
    client.loglikelihood([("Question: 2+2?\\nAnswer:", " 4")])      # [(log P(" 4" | context), is_greedy)]

Choices
- A failure is a value, not an exception: every `Reply` carries `error` (None when the call worked), so one
  endpoint timeout, HTTP 500 or over-long prompt costs one item, never the run (issue 19). Transport
  errors and timeouts are retried `retries` times with exponential backoff first.
- `GenParams` defaults are the K-EXAONE report's evaluation settings: temperature 1.0, top-p 0.95, MTP
  (speculative decoding) off.
- Reasoning mode is the chat template's `enable_thinking`; the endpoint gets it as vLLM expects,
  `chat_template_kwargs: {"enable_thinking": ...}` (K-EXAONE's template default is on; vLLM's parser
  default is off, so it is always sent explicitly).
- Log-likelihoods: the engine client runs one teacher-forced forward per (context + continuation); the
  endpoint client asks `/v1/completions` with `echo: true, logprobs: 1, max_tokens: 1` on token ids when it
  has the tokenizer (exact), the way lm-eval's `local-completions` backend does.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .tokenizer import specials as S
from .tokenizer.chat import parse_response


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 1024
    temperature: float = 1.0  # the report's setting
    top_p: float = 0.95  # the report's setting
    seed: int | None = 0
    speculative: int = 0  # MTP drafts; the report evaluates with MTP off

    def __post_init__(self):
        if self.max_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need max_tokens >= 1, temperature >= 0, 0 < top_p <= 1; got {self.max_tokens}, "
                             f"{self.temperature}, {self.top_p}")


@dataclass
class Reply:
    text: str = ""  # everything generated after the generation prompt (reasoning included, special tokens kept)
    reasoning: str = ""  # the think block
    content: str = ""  # the answer after </think>
    tool_calls: list | None = None
    finish_reason: str | None = None  # "stop" | "length" | None on error
    error: str | None = None  # one line when the call failed
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _one_line(text: str, n: int = 300) -> str:
    return " ".join(str(text).split())[:n]


def split_reply(text: str, thinking: bool) -> dict:
    """Generated text -> reasoning / content / tool calls. In reasoning mode the prompt opened `<think>`."""
    body = text.split(S.END_OF_TURN, 1)[0]
    return parse_response(f"{S.THINK_OPEN}\n{body}" if thinking and S.THINK_OPEN not in body else body)


class ModelClient:
    """What evaluation and agents need from a model. `name` and `describe()` go into result files."""

    name = "model"

    def chat(self, conversations: list[list[dict]], params: GenParams, thinking: bool = True,
             tools: list | None = None) -> list[Reply]:
        raise NotImplementedError

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool] | str]:
        """(context, continuation) -> (sum of the continuation's token log-probs, whether greedy decoding would
        produce it), or an error line for that pair."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"client": type(self).__name__, "name": self.name}


# ---------------------------------------------------------------------------------------------- in-process
class EngineClient(ModelClient):
    """A kexa model + tokenizer in this process, through `kexa.infer.Engine` (ragged batches, KV cache)."""

    def __init__(self, model, tokenizer, name: str = "kexa", batch_size: int = 8):
        from .infer.engine import Engine
        self.model, self.tok, self.name, self.batch_size = model, tokenizer, name, batch_size
        self.engine = Engine(model)

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: str = "float32", device: str = "cpu", batch_size: int = 8,
                    tokenizer: str | Path | None = None):
        """Load through `kexa.infer.cli.load` (every bad folder is one UsageError line)."""
        from types import SimpleNamespace

        from .infer.cli import load
        model, tok, _ = load(SimpleNamespace(model=str(folder), tokenizer=tokenizer and str(tokenizer), dtype=dtype,
                                             device=device))
        return cls(model, tok, name=Path(folder).name, batch_size=batch_size)

    def describe(self) -> dict:
        cfg = self.model.config
        return {**super().describe(), "vocab_size": cfg.vocab_size, "context": cfg.max_position_embeddings,
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", "")}

    def chat(self, conversations, params: GenParams, thinking: bool = True, tools=None) -> list[Reply]:
        from .infer.engine import GenerationError
        from .infer.sampling import SamplingParams
        from .tokenizer.chat import encode_chat
        stops = tuple(sorted({i for i in (self.tok.eos_id, self.model.config.eos_token_id) if i is not None}))
        sampling = SamplingParams(max_new_tokens=params.max_tokens, temperature=params.temperature,
                                  top_p=params.top_p, stop_token_ids=stops, seed=params.seed)
        replies: list[Reply | None] = [None] * len(conversations)
        prompts: dict[int, list[int]] = {}
        limit = self.model.config.max_position_embeddings
        for i, messages in enumerate(conversations):
            try:
                ids = encode_chat(self.tok, messages, tools=tools, enable_thinking=thinking,
                                  add_generation_prompt=True).ids
            except Exception as e:  # noqa: BLE001 — a template error (bad roles, ...) costs this item only
                replies[i] = Reply(error=f"chat template: {_one_line(e)}")
                continue
            if len(ids) >= limit:
                replies[i] = Reply(error=f"prompt of {len(ids)} tokens does not fit the model's context of {limit}")
                continue
            prompts[i] = ids
        order = list(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            t = time.perf_counter()
            try:
                res = self.engine.generate([prompts[i] for i in rows], sampling, speculative=params.speculative)
            except GenerationError as e:
                for i in rows:
                    replies[i] = Reply(error=f"generation: {_one_line(e)}")
                continue
            dt = (time.perf_counter() - t) / len(rows)
            for i, ids, reason in zip(rows, res.token_ids, res.finish_reasons):
                text = self.tok.decode(ids)  # special tokens kept: template compliance can be checked on it
                # reasoning and answer as a server returns them (vLLM's default): special tokens dropped
                parsed = split_reply(self.tok.decode(ids, skip_special_tokens=True), thinking)
                replies[i] = Reply(text=text, reasoning=parsed["reasoning_content"], content=parsed["content"],
                                   tool_calls=parsed["tool_calls"] or None, finish_reason=reason, seconds=dt)
        return replies  # type: ignore[return-value]

    def token_loglikelihood(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Token-level scoring shared with the lm-eval adapter: (context ids, continuation ids) -> (log-prob of
        the continuation, greedy). One forward per row in fp32 log-softmax (no padding enters the MoE router)."""
        import torch
        out = []
        limit = self.model.config.max_position_embeddings
        with torch.inference_mode():
            for ctx, cont in rows:
                ids = (ctx + cont)[-(limit + 1):]  # lm-eval's left truncation: keep the continuation whole
                inp = torch.tensor([ids[:-1]], device=self.engine.device)  # (1, T)
                logits = self.model(inp).logits[0, -len(cont):].float()  # (n, V)
                logp = torch.log_softmax(logits, dim=-1)
                target = torch.tensor(cont, device=logp.device)
                score = logp.gather(1, target[:, None]).sum().item()
                out.append((score, bool((logits.argmax(-1) == target).all())))
        return out

    def loglikelihood(self, pairs):
        rows, out = [], []
        for ctx, cont in pairs:
            c_ids = self.tok.encode(ctx)
            whole = self.tok.encode(ctx + cont)
            rows.append((whole[:len(c_ids)] or [self.tok.eos_id], whole[len(c_ids):]))
        scored = iter(self.token_loglikelihood([r for r in rows if r[1]]))
        for _, cont in rows:
            out.append(next(scored) if cont else "empty continuation after tokenisation")
        return out


# ---------------------------------------------------------------------------------------------- endpoint
class EndpointClient(ModelClient):
    """Any OpenAI-compatible server (`kexa serve`, vLLM, SGLang) through the `openai` client.

    `model` defaults to the first id of `/v1/models`. Connection errors, 5xx, 429 and timeouts are retried
    `retries` times; what still fails becomes that item's `Reply.error` (4xx are not retried)."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str = "EMPTY", timeout_s: float = 600.0,
                 retries: int = 2, concurrency: int = 8, backoff_s: float = 0.5, tokenizer=None):
        import openai
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.timeout_s, self.retries, self.concurrency, self.backoff_s = timeout_s, retries, concurrency, backoff_s
        self.tok = tokenizer
        self._model = model

    @property
    def name(self) -> str:
        if self._model is None:
            try:
                self._model = self._call(lambda: self.client.models.list().data[0].id)
            except Exception as e:  # noqa: BLE001
                raise ConnectionError(f"endpoint {self.base_url}: cannot list models ({_one_line(e)}); "
                                      f"pass the model name") from e
        return self._model

    def describe(self) -> dict:
        return {"client": "EndpointClient", "name": self.name, "endpoint": self.base_url}

    def _call(self, fn):
        """fn() with retries on transport errors, 5xx, 429 and timeouts; raises the last error."""
        import openai
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as e:
                if attempt == self.retries:
                    raise
                time.sleep(self.backoff_s * 2 ** attempt)

    def _error(self, e: Exception) -> str:
        import openai
        if isinstance(e, openai.APITimeoutError):
            return f"timeout after {self.timeout_s}s ({self.retries + 1} attempts)"
        if isinstance(e, openai.APIStatusError):
            return f"HTTP {e.status_code}: {_one_line(e.message)}"
        if isinstance(e, openai.APIConnectionError):
            return f"connection error ({self.retries + 1} attempts): {_one_line(e)}"
        return f"{type(e).__name__}: {_one_line(e)}"

    def _one_chat(self, messages, params: GenParams, thinking: bool, tools) -> Reply:
        t = time.perf_counter()
        kw = {"tools": tools} if tools else {}
        try:
            r = self._call(lambda: self.client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=params.max_tokens, temperature=params.temperature,
                top_p=params.top_p, seed=params.seed, extra_body={"chat_template_kwargs": {"enable_thinking": thinking}},
                **kw))
            choice = r.choices[0]
            msg = choice.message
        except Exception as e:  # noqa: BLE001 — any failure is this item's error line
            return Reply(error=self._error(e), seconds=time.perf_counter() - t)
        extra = msg.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
        content = msg.content or ""
        if not reasoning and S.THINK_CLOSE in content:  # a server without a reasoning parser
            parsed = split_reply(content, thinking)
            reasoning, content = parsed["reasoning_content"], parsed["content"]
        calls = [c.model_dump() for c in msg.tool_calls] if msg.tool_calls else None
        text = (f"{reasoning}\n{S.THINK_CLOSE}\n\n" if thinking else "") + content
        return Reply(text=text, reasoning=reasoning, content=content.strip(), tool_calls=calls,
                     finish_reason=choice.finish_reason, seconds=time.perf_counter() - t)

    def chat(self, conversations, params: GenParams, thinking: bool = True, tools=None) -> list[Reply]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(conversations)))) as pool:
            return list(pool.map(lambda m: self._one_chat(m, params, thinking, tools), conversations))

    def _one_loglikelihood(self, ctx: str, cont: str):
        if self.tok is not None:  # exact: score token ids, as lm-eval's local-completions does
            c_ids, whole = self.tok.encode(ctx), self.tok.encode(ctx + cont)
            prompt, n_ctx = whole, len(c_ids)
        else:
            prompt, n_ctx = ctx + cont, None
        try:
            r = self._call(lambda: self.client.completions.create(
                model=self.name, prompt=prompt, max_tokens=1, temperature=0, logprobs=1, echo=True))
            lp = r.choices[0].logprobs
        except Exception as e:  # noqa: BLE001
            return self._error(e)
        if lp is None or not lp.token_logprobs:
            return "the endpoint returned no logprobs (it needs echo + logprobs on /v1/completions)"
        n_prompt = len(lp.token_logprobs) - 1  # the echoed prompt, then the one generated token
        if n_ctx is None:  # text prompt: the continuation starts at the first token at or after len(ctx)
            n_ctx = next((i for i, off in enumerate(lp.text_offset[:n_prompt]) if off >= len(ctx)), n_prompt)
        if n_ctx >= n_prompt or n_ctx < 1:
            return "empty continuation or context after tokenisation"
        score = sum(lp.token_logprobs[n_ctx:n_prompt])
        greedy = all(max(top.values()) <= lp.token_logprobs[i] + 1e-6 for i, top in
                     enumerate(lp.top_logprobs[n_ctx:n_prompt], start=n_ctx) if top)
        return (float(score), bool(greedy)) if math.isfinite(score) else "non-finite log-probability"

    def loglikelihood(self, pairs):
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(pairs)))) as pool:
            return list(pool.map(lambda p: self._one_loglikelihood(*p), pairs))
