"""The OpenAI-compatible HTTP layer of `kexa serve` (FastAPI), thin over `kexa.infer.scheduler`.

    app = create_app(Scheduler(engine).start(), tokenizer, "kexa-nano")
    uvicorn.run(app)                                          # or `kexa serve --model DIR`

Endpoints: GET / (the chat page, `static/index.html`), /health, /v1/models, /metrics; POST
/v1/chat/completions, /v1/completions, /tokenize, /detokenize. Conventions are vLLM's for K-EXAONE
(`--reasoning-parser deepseek_v3 --enable-auto-tool-choice --tool-call-parser hermes`), so its clients
work unchanged:
- reasoning goes to both `reasoning_content` and `reasoning` (message and streamed deltas);
  `chat_template_kwargs.enable_thinking` defaults to **on**, K-EXAONE's default — vLLM's deepseek_v3
  parser defaults to off, a known trap when moving clients between the two;
- tools: `<tool_call>{"name", "arguments"}</tool_call>` in the reply become OpenAI `tool_calls`
  (finish_reason "tool_calls"); streamed as OpenAI does: a delta with id, type, name and empty
  arguments, then the arguments. tool_choice "none" leaves tags as text; "required" and a named
  function are enforced by writing the start of the call (`<tool_call>{"name": "f", "arguments": `)
  after the generation prompt — the model continues from there (vLLM uses guided decoding instead);
- errors: the `{"error": {...}}` envelope with the matching status, never a bare 500: bad JSON or
  fields 400, context overflow 400 naming both lengths, wrong API key 401, body over the limit 413,
  queue full 503;
- a client that disconnects cancels its requests: the scheduler frees their slots before its next step.

Shape of the flow: request -> prompt ids (chat template) -> n scheduler Requests -> Events on an
asyncio queue -> detokenise (specials skipped) -> stop strings -> reasoning/content/tool split -> JSON/SSE.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from importlib import resources
from typing import Any, AsyncIterator

import jinja2
import jsonschema
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..infer.cli import TextStream
from ..infer.engine import GenerationError
from ..infer.sampling import SamplingParams
from ..infer.scheduler import Event, QueueFull, Request, Scheduler, TokenLogprob
from ..tokenizer import specials as S
from .metrics import CONTENT_TYPE_LATEST, ServerMetrics
from .protocol import (APIError, ChatCompletionRequest, CompletionRequest, DetokenizeRequest, SamplingFields,
                       TokenizeRequest, error_body)
from .reply import PLAIN_HEAD, THINKING_HEAD, ReplyStream, StopStrings, arguments_json, split_reply

log = logging.getLogger("kexa.serve")
MAX_REQUEST_BYTES = 8 * 2**20  # > 1 MB so an over-long prompt reaches the context check and gets its 400
PROTECTED = ("/v1/", "/tokenize", "/detokenize")


class _SkipSpecial:
    """Detokenise model output as vLLM does by default: special tokens (<|endofturn|>, roles) dropped;
    <think> and the tool tags are not special, so they stay for the reply parser."""

    def __init__(self, tok):
        self.tok = tok

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True)


class Guard:
    """ASGI middleware: Bearer API key on the API routes (constant-time compare) and a body-size limit."""

    def __init__(self, app, api_key: str | None, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected and scope["path"].startswith(PROTECTED):
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                return await _send_error(send, 401, "invalid or missing API key (send 'Authorization: Bearer KEY')")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _send_error(send, 413, f"request body of {length.decode(errors='replace')} bytes is over "
                                                f"the server's limit of {self.max_bytes} bytes")
        seen = 0

        async def limited_receive():  # bodies without a Content-Length (chunked) are counted as they come
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise APIError(413, f"request body is over the server's limit of {self.max_bytes} bytes")
            return message

        return await self.app(scope, limited_receive, send)


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps(error_body(status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


def create_app(scheduler: Scheduler, tokenizer, model_name: str, api_key: str | None = None,
               max_request_bytes: int = MAX_REQUEST_BYTES, defaults: dict | None = None,
               cors_origins: list[str] | None = None) -> FastAPI:
    """`defaults`: sampling defaults from the model's generation_config.json (temperature, top_p, top_k)."""
    app = FastAPI(title="kexa serve", docs_url=None, redoc_url=None, openapi_url=None)
    server = _Server(scheduler, tokenizer, model_name, defaults or {})
    app.state.server = server
    if cors_origins:  # off by default: a browser page from another origin cannot call the API
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(Guard, api_key=api_key, max_bytes=max_request_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return _error(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        err = exc.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            return _error(400, f"malformed JSON in the request body: {err.get('msg')}")
        if not loc and isinstance(err.get("input"), (bytes, str)):  # sent without a JSON content type
            return _error(400, f"the request body must be a JSON object (got {_short(err.get('input'))})")
        param = ".".join(loc) or None
        return _error(400, f"{param or 'body'}: {err.get('msg')} (got {_short(err.get('input'))})", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _internal_error(request, exc: Exception):
        log.exception("internal error")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        page = resources.files(__package__).joinpath("static", "index.html")
        if not page.is_file():
            return _error(404, "the chat page is not installed (kexa/serve/static/index.html is missing)")
        return HTMLResponse(page.read_text("utf-8"))

    @app.get("/health")
    async def health():
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": server.created,
                                            "owned_by": "kexa", "root": model_name,
                                            "max_model_len": scheduler.context}]}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        server.check_model(body.model, optional=True)
        if (body.prompt is None) == (body.messages is None):
            raise APIError(400, "give exactly one of 'prompt' (text) or 'messages' (a chat)", "prompt")
        if body.prompt is not None:
            ids = tokenizer.encode(body.prompt)
        else:
            ids = server.render(body.messages, None, _thinking(body.chat_template_kwargs), body.add_generation_prompt)
        return {"count": len(ids), "max_model_len": scheduler.context, "tokens": ids}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        server.check_model(body.model, optional=True)
        bad = [t for t in body.tokens if not 0 <= t < tokenizer.vocab_size]
        if bad:
            raise APIError(400, f"token ids outside [0, {tokenizer.vocab_size}): {bad[:5]}", "tokens")
        return {"prompt": tokenizer.decode(body.tokens)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: HTTPRequest):
        return await server.chat(body, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: HTTPRequest):
        return await server.complete(body, request)

    return app


def _short(x: Any, n: int = 80) -> str:
    s = repr(x)
    return s if len(s) <= n else s[:n] + "…"


def _thinking(kwargs: dict | None) -> bool:
    value = (kwargs or {}).get("enable_thinking", True)  # K-EXAONE's default: reasoning on
    if not isinstance(value, bool):
        raise APIError(400, f"chat_template_kwargs.enable_thinking must be true or false, got {value!r}",
                       "chat_template_kwargs.enable_thinking")
    return value


class _Choice:
    """One sequence of a response: its scheduler request, text pipeline and token bookkeeping."""

    def __init__(self, index: int, req: Request, tok, head: str, parse_tools: bool, stops: list[str]):
        self.index, self.req, self.tok = index, req, tok
        self.detok = TextStream(_SkipSpecial(tok))
        self.stops = StopStrings(stops)
        self.reply = ReplyStream(head, parse_tools)
        self.text = ""  # released generated text (after stop strings)
        self.ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []
        self.prompt_logprobs = None
        self.finish_reason: str | None = None
        self.last_token_at: float | None = None

    def take(self, ev: Event) -> str:
        """Fold an event in; returns the newly released text."""
        stop_ids = self.req.params.stop_token_ids
        ids = [t for t in ev.tokens if t not in stop_ids]  # the stop token is not part of the text
        self.ids += ev.tokens
        if ev.logprobs:
            self.logprobs += ev.logprobs
        if ev.prompt_logprobs is not None:
            self.prompt_logprobs = ev.prompt_logprobs
        final = ev.finish_reason is not None
        piece = self.stops.push(self.detok.push(ids) if ids else "", final=final)
        if final and self.detok.text != self.tok.decode(self.detok.ids, skip_special_tokens=True):
            piece += self.stops.push(self.tok.decode(self.detok.ids, skip_special_tokens=True)[len(self.detok.text):],
                                     final=True)  # a held-back partial character at the very end
        self.text += piece
        if self.stops.stopped:
            self.finish_reason = "stop"
        elif final:
            self.finish_reason = ev.finish_reason
        return piece


class _Server:
    def __init__(self, scheduler: Scheduler, tok, model_name: str, defaults: dict):
        self.scheduler, self.tok, self.model_name, self.defaults = scheduler, tok, model_name, defaults
        self.metrics = ServerMetrics(scheduler, model_name)
        self.created = int(time.time())
        self.stop_ids = tuple(sorted({i for i in (tok.eos_id, scheduler.config.eos_token_id) if i is not None}))

    # ------------------------------------------------------------------ request -> prompt
    def check_model(self, name: str | None, optional: bool = False) -> None:
        if name is None and optional:
            return
        if name != self.model_name:
            raise APIError(400, f"The model `{name}` does not exist; this server serves `{self.model_name}` "
                                f"(GET /v1/models)", "model")

    def render(self, messages, tools, thinking: bool, add_generation_prompt: bool = True) -> list[int]:
        convo = []
        for i, m in enumerate(messages):
            d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
            d["content"] = "".join(p.text for p in m.content) if isinstance(m.content, list) else (m.content or "")
            reasoning = m.reasoning_content if m.reasoning_content is not None else m.reasoning
            if reasoning:
                d["reasoning_content"] = reasoning
            if m.tool_calls:
                if m.role != "assistant":
                    raise APIError(400, f"messages[{i}]: only assistant messages carry tool_calls",
                                   f"messages.{i}.tool_calls")
                calls = []
                for c in m.tool_calls:
                    args = c.function.arguments
                    if isinstance(args, str):
                        try:
                            args = json.loads(args) if args.strip() else {}
                        except json.JSONDecodeError as e:
                            raise APIError(400, f"messages[{i}]: tool call arguments are not valid JSON: {e}",
                                           f"messages.{i}.tool_calls") from e
                    calls.append({"type": "function", "function": {"name": c.function.name, "arguments": args}})
                d["tool_calls"] = calls
            convo.append(d)
        try:
            return self.tok.encode_chat(convo, tools=tools, enable_thinking=thinking,
                                        add_generation_prompt=add_generation_prompt).ids
        except jinja2.TemplateError as e:
            raise APIError(400, f"the chat template rejected the messages: {e}", "messages") from e

    def sampling(self, body: SamplingFields, max_tokens: int | None, prompt_len: int, *, logprobs: int | None,
                 prompt_logprobs: int | None = None) -> list[Request]:
        """n scheduler Requests for one prompt (seed + i per choice, so n samples differ but replay)."""
        ctx = self.scheduler.context
        if prompt_len >= ctx:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens. However, your prompt has "
                                f"{prompt_len} tokens, which leaves no room for the completion.", "messages")
        if max_tokens is None:
            max_tokens = ctx - prompt_len
        temperature = body.temperature if body.temperature is not None else self.defaults.get("temperature", 1.0)
        top_p = body.top_p if body.top_p is not None else self.defaults.get("top_p", 1.0)
        top_k = body.top_k if body.top_k is not None else self.defaults.get("top_k", 0)
        reqs = []
        for i in range(body.n):
            try:
                params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                        top_k=max(top_k, 0), repetition_penalty=body.repetition_penalty or 1.0,
                                        stop_token_ids=() if body.ignore_eos else self.stop_ids,
                                        seed=None if body.seed is None else body.seed + i)
            except ValueError as e:
                raise APIError(400, str(e)) from e
            reqs.append(Request([], params, presence_penalty=body.presence_penalty,
                                frequency_penalty=body.frequency_penalty, logprobs=logprobs,
                                prompt_logprobs=prompt_logprobs))
        return reqs

    def submit(self, choices: list[_Choice], queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        try:
            for c in choices:
                self.scheduler.submit(c.req, lambda ev, i=c.index: loop.call_soon_threadsafe(queue.put_nowait, (i, ev)))
        except GenerationError as e:
            self.cancel(choices)
            raise APIError(400, str(e)) from e
        except QueueFull as e:
            self.cancel(choices)
            raise APIError(503, str(e)) from e
        self.metrics.prompt_tokens.inc(_prompt_tokens(choices))

    def cancel(self, choices: list[_Choice]) -> None:
        for c in choices:
            if c.req.id >= 0:
                self.scheduler.cancel(c.req)

    async def events(self, choices: list[_Choice], queue: asyncio.Queue, arrival: float) -> AsyncIterator:
        """(choice, new text, event) until every choice is finished; stop strings cancel their request."""
        open_ = len(choices)
        while open_:
            i, ev = await queue.get()
            c = choices[i]
            if c.finish_reason is not None:
                continue  # a stop string already ended it; the scheduler's last words are dropped
            if ev.error:
                log.error(ev.error)
            now = time.perf_counter()
            if ev.tokens:
                if c.last_token_at is None:
                    self.metrics.ttft.observe(now - arrival)
                else:
                    self.metrics.itl.observe((now - c.last_token_at) / len(ev.tokens))
                c.last_token_at = now
                self.metrics.generation_tokens.inc(len(ev.tokens))
            piece = c.take(ev)
            if c.finish_reason is not None:
                if ev.finish_reason is None:
                    self.scheduler.cancel(c.req)  # a stop string matched
                open_ -= 1
                self.metrics.finished(c.finish_reason)
                self.metrics.e2e.observe(now - arrival)
            yield c, piece, ev

    # ------------------------------------------------------------------ chat
    async def chat(self, body: ChatCompletionRequest, http: HTTPRequest):
        arrival = time.perf_counter()
        self.check_model(body.model)
        thinking = _thinking(body.chat_template_kwargs)
        tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
        choice = body.tool_choice
        if choice is not None and choice != "none" and not tools:
            raise APIError(400, "tool_choice needs `tools`: declare the functions the model may call", "tool_choice")
        names = set()
        for i, t in enumerate(body.tools or []):
            if t.function.name in names:
                raise APIError(400, f"tools[{i}]: duplicate function name {t.function.name!r}", f"tools.{i}")
            names.add(t.function.name)
            if t.function.parameters is not None:
                try:
                    jsonschema.validators.validator_for(t.function.parameters).check_schema(t.function.parameters)
                except jsonschema.SchemaError as e:
                    raise APIError(400, f"tools[{i}] ({t.function.name}): parameters is not a valid JSON "
                                        f"schema: {e.message}", f"tools.{i}.function.parameters") from e
        forced = ""
        if choice == "required":
            forced = S.TOOL_CALL_OPEN
        elif choice is not None and not isinstance(choice, str):
            if choice.function.name not in names:
                raise APIError(400, f"tool_choice names {choice.function.name!r}, which is not among the "
                                    f"declared tools {sorted(names)}", "tool_choice")
            forced = f'{S.TOOL_CALL_OPEN}{{"name": {json.dumps(choice.function.name)}, "arguments": '
        head = THINKING_HEAD if thinking else PLAIN_HEAD
        if forced and thinking:  # the call comes after the (empty) reasoning
            forced = f"\n{S.THINK_CLOSE}\n\n" + forced
        if body.logprobs is False and body.top_logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        ids = self.render(body.messages, tools, thinking)
        if forced:
            ids = ids + self.tok.encode(forced)
        max_tokens = body.max_completion_tokens or body.max_tokens
        reqs = self.sampling(body, max_tokens, len(ids), logprobs=(body.top_logprobs or 0) if body.logprobs else None)
        parse_tools = bool(tools) and choice != "none"
        stops = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        choices = []
        for i, r in enumerate(reqs):
            r.prompt = ids
            choices.append(_Choice(i, r, self.tok, head + forced, parse_tools, stops))
        queue: asyncio.Queue = asyncio.Queue()
        self.submit(choices, queue)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(self._chat_stream(choices, queue, arrival, rid, created, include_usage),
                                     media_type="text/event-stream")
        return await self._until_done(http, choices, self._chat_whole(choices, queue, arrival, rid, created))

    async def _until_done(self, http: HTTPRequest, choices: list[_Choice], work) -> dict:
        """Await a non-streamed response; a client that goes away cancels its requests."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.25)
                if not task.done() and await http.is_disconnected():
                    task.cancel()
                    break
            return await task
        finally:
            self.cancel(choices)

    async def _chat_whole(self, choices, queue, arrival, rid, created) -> dict:
        async for _ in self.events(choices, queue, arrival):
            pass
        out = []
        for c in choices:
            c.reply.push(c.text, final=True)
            r = c.reply
            calls = _tool_calls(r.text, r.parse_tools)
            message = {"role": "assistant", "content": r.content or (None if calls else ""),
                       "reasoning_content": r.reasoning or None, "reasoning": r.reasoning or None,
                       "tool_calls": calls}
            out.append({"index": c.index, "message": message, "logprobs": self._chat_logprobs(c, c.logprobs),
                        "finish_reason": "tool_calls" if calls and c.finish_reason == "stop" else c.finish_reason})
        return {"id": rid, "object": "chat.completion", "created": created, "model": self.model_name,
                "choices": out, "usage": _usage(choices)}

    async def _chat_stream(self, choices, queue, arrival, rid, created, include_usage) -> AsyncIterator[str]:
        def chunk(index, delta, finish=None, logprobs=None):
            c = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
                 "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return f"data: {json.dumps(c, ensure_ascii=False)}\n\n"

        calls_sent = [0] * len(choices)
        try:
            for c in choices:
                yield chunk(c.index, {"role": "assistant", "content": ""})
            async for c, piece, ev in self.events(choices, queue, arrival):
                final = c.finish_reason is not None
                d_reasoning, d_content, calls = c.reply.push(piece, final=final)
                lp = self._chat_logprobs(c, ev.logprobs) if ev.logprobs else None
                if d_reasoning:
                    yield chunk(c.index, {"reasoning_content": d_reasoning, "reasoning": d_reasoning}, logprobs=lp)
                    lp = None
                if d_content:
                    yield chunk(c.index, {"content": d_content}, logprobs=lp)
                    lp = None
                for call in calls:
                    k = calls_sent[c.index]
                    calls_sent[c.index] += 1
                    fn = call["function"]
                    yield chunk(c.index, {"tool_calls": [{"index": k, "id": _call_id(), "type": "function",
                                                          "function": {"name": fn["name"], "arguments": ""}}]})
                    yield chunk(c.index, {"tool_calls": [{"index": k, "function": {
                        "arguments": arguments_json(fn["arguments"])}}]})
                if lp is not None:  # tokens whose text is still held back
                    yield chunk(c.index, {}, logprobs=lp)
                if final:
                    reason = "tool_calls" if calls_sent[c.index] and c.finish_reason == "stop" else c.finish_reason
                    yield chunk(c.index, {}, finish=reason)
            if include_usage:
                yield "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                             "model": self.model_name, "choices": [], "usage": _usage(choices)}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.cancel(choices)  # client gone (or done): free the slots now

    def _chat_logprobs(self, c: _Choice, lps: list[TokenLogprob] | None) -> dict | None:
        if c.req.logprobs is None or lps is None:
            return None

        def entry(t, lp):
            s = self.tok.decode([t])
            return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}

        return {"content": [{**entry(x.token, x.logprob), "top_logprobs": [entry(t, lp) for t, lp in x.top]}
                            for x in lps]}

    # ------------------------------------------------------------------ text completions
    async def complete(self, body: CompletionRequest, http: HTTPRequest):
        arrival = time.perf_counter()
        self.check_model(body.model)
        prompts = self._prompts(body.prompt)
        if body.stream and body.echo and body.logprobs is not None:
            raise APIError(400, "echo with logprobs is only supported without streaming", "echo")
        stops = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        choices: list[_Choice] = []
        for ids in prompts:
            if not ids:
                raise APIError(400, "prompt is empty: at least one token is needed to condition on", "prompt")
            for r in self.sampling(body, body.max_tokens, len(ids), logprobs=body.logprobs,
                                   prompt_logprobs=body.logprobs if body.echo and body.logprobs is not None else None):
                r.prompt = ids
                choices.append(_Choice(len(choices), r, self.tok, "", False, stops))
        queue: asyncio.Queue = asyncio.Queue()
        self.submit(choices, queue)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(self._complete_stream(body, choices, queue, arrival, rid, created, include_usage),
                                     media_type="text/event-stream")
        return await self._until_done(http, choices, self._complete_whole(body, choices, queue, arrival, rid, created))

    def _prompts(self, prompt) -> list[list[int]]:
        vocab = self.scheduler.config.vocab_size
        if isinstance(prompt, str):
            return [self.tok.encode(prompt)]
        if prompt and all(isinstance(p, str) for p in prompt):
            return [self.tok.encode(p) for p in prompt]
        batch = [prompt] if prompt and all(isinstance(t, int) for t in prompt) else prompt
        if not batch:
            raise APIError(400, "prompt is empty", "prompt")
        for ids in batch:
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise APIError(400, f"prompt token ids outside [0, {vocab}): {bad[:5]}", "prompt")
        return [list(ids) for ids in batch]

    async def _complete_whole(self, body, choices, queue, arrival, rid, created) -> dict:
        async for _ in self.events(choices, queue, arrival):
            pass
        out = []
        for c in choices:
            text = (self.tok.decode(c.req.prompt) if body.echo else "") + c.text
            out.append({"index": c.index, "text": text, "logprobs": self._completion_logprobs(c, body.echo),
                        "finish_reason": c.finish_reason})
        return {"id": rid, "object": "text_completion", "created": created, "model": self.model_name,
                "choices": out, "usage": _usage(choices)}

    async def _complete_stream(self, body, choices, queue, arrival, rid, created, include_usage):
        def chunk(index, text, finish=None):
            c = {"id": rid, "object": "text_completion", "created": created, "model": self.model_name,
                 "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return f"data: {json.dumps(c, ensure_ascii=False)}\n\n"

        try:
            if body.echo:
                for c in choices:
                    yield chunk(c.index, self.tok.decode(c.req.prompt))
            async for c, piece, ev in self.events(choices, queue, arrival):
                if piece or c.finish_reason is not None:
                    yield chunk(c.index, piece, c.finish_reason)
            if include_usage:
                yield "data: " + json.dumps({"id": rid, "object": "text_completion", "created": created,
                                             "model": self.model_name, "choices": [], "usage": _usage(choices)}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.cancel(choices)

    def _completion_logprobs(self, c: _Choice, echo: bool) -> dict | None:
        """OpenAI's legacy shape: tokens, token_logprobs, top_logprobs ({token: logprob}), text_offset;
        with echo the prompt's tokens come first (the first one has no logprob: nothing precedes it)."""
        if c.req.logprobs is None:
            return None
        entries: list[tuple[int, TokenLogprob | None]] = []
        if echo:
            entries += list(zip(c.req.prompt, c.prompt_logprobs or [None] * len(c.req.prompt)))
        entries += [(x.token, x) for x in c.logprobs]
        tokens, token_lps, tops, offsets, offset = [], [], [], [], 0
        for t, x in entries:
            s = self.tok.decode([t])
            tokens.append(s)
            offsets.append(offset)
            offset += len(s)
            token_lps.append(None if x is None else x.logprob)
            tops.append(None if x is None else {self.tok.decode([i]): lp for i, lp in x.top} or {s: x.logprob})
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


def _call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex[:24]}"


def _tool_calls(text: str, parse_tools: bool) -> list[dict]:
    calls = split_reply(text, parse_tools)["tool_calls"]
    return [{"id": _call_id(), "type": "function",
             "function": {"name": c["function"]["name"], "arguments": arguments_json(c["function"]["arguments"])}}
            for c in calls]


def _prompt_tokens(choices: list[_Choice]) -> int:
    """Each distinct prompt once (the n choices of a prompt share its id list)."""
    return sum(len(p) for p in {id(c.req.prompt): c.req.prompt for c in choices}.values())


def _usage(choices: list[_Choice]) -> dict:
    prompt, completion = _prompt_tokens(choices), sum(len(c.ids) for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
