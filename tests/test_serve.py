"""`kexa serve` end to end: a real uvicorn server on 127.0.0.1 (free port) over tiny models, driven by
the official `openai` client and raw HTTP.

Two model folders: a random tiny model (greedy agreement with the engine, errors, concurrency,
cancellation) and a tiny model memorised for a few seconds on three chat turns (a reasoning reply, a
non-reasoning reply, a tool call), so reasoning split and tool-call parsing are checked on what a
model actually generates.
"""

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import torch
import uvicorn

from kexa import KExaone, ModelConfig
from kexa.infer import Engine, SamplingParams
from kexa.serve.cli import _parser, build
from kexa.serve.reply import THINKING_HEAD, ReplyStream, StopStrings, split_reply
from kexa.tokenizer import Tokenizer, train_bpe
from kexa.tokenizer.chat import encode_chat, parse_response, render

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
WEATHER = [{"role": "user", "content": "Weather in Seoul?"}]
HI = [{"role": "user", "content": "Say hi"}]
MEMORISED = [  # (messages, tools, enable_thinking, assistant reply)
    (WEATHER, TOOLS, True, {"role": "assistant", "reasoning_content": "Call the tool.", "content": "",
                            "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                             "arguments": {"city": "Seoul"}}}]}),
    (HI, None, True, {"role": "assistant", "reasoning_content": "A greeting.", "content": "Hello there!"}),
    (HI, None, False, {"role": "assistant", "content": "Hi, friend."}),
]
CORPUS = ("the quick brown fox jumps over the lazy dog. Weather in Seoul? Say hi. Hello there! Hi, friend. "
          "A greeting. Call the tool. get_weather city Seoul string object properties required description "
          "function type name arguments parameters\n") * 50


def _folder(path, memorise: bool):
    (path / "corpus.txt").write_text(CORPUS, "utf-8")
    tok = train_bpe([str(path / "corpus.txt")], vocab_size=600)
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size))
    if memorise:  # overfit the three turns on their assistant tokens until greedy reproduces them
        seqs = [encode_chat(tok, m + [r], tools=t, enable_thinking=th) for m, t, th, r in MEMORISED]
        T = max(len(s.ids) for s in seqs)
        ids = torch.zeros(len(seqs), T, dtype=torch.long)
        labels = torch.full((len(seqs), T), -100)
        for i, s in enumerate(seqs):
            ids[i, :len(s.ids)] = torch.tensor(s.ids)
            target = torch.tensor(s.ids[1:] + [0])
            labels[i, :len(s.ids)] = torch.where(torch.tensor(s.assistant_mask[1:] + [0]).bool(), target, -100)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        for step in range(200):
            logits = model(ids).logits  # (3, T, V)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
            if step % 5 == 0 and loss.item() < 0.2 and ((logits.argmax(-1) == labels) | (labels < 0)).all():
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            raise AssertionError("the tiny model did not memorise the chat turns")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


class Live:
    """A uvicorn server in a thread, built exactly as `kexa serve` builds it."""

    def __init__(self, folder, *extra):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        args = _parser().parse_args(["--model", str(folder), "--served-model-name", "tiny", *map(str, extra)])
        self.app, self.scheduler = build(args)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.scheduler.start()
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)

    def close(self):
        self.server.should_exit = True
        self.thread.join()
        self.scheduler.stop()

    def running(self) -> float:
        text = httpx.get(self.url + "/metrics").text
        return float(next(l for l in text.splitlines() if l.startswith("kexa:num_requests_running")).split()[-1])


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("serve_random"), memorise=False)


@pytest.fixture(scope="module")
def live(random_folder):
    srv = Live(random_folder, "--max-batch", 8)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    srv = Live(_folder(tmp_path_factory.mktemp("serve_memorised"), memorise=True))
    yield srv
    srv.close()


# ---------------------------------------------------------------------------------------------- agreement
def test_chat_equals_engine_greedy_token_for_token(live, random_folder):
    tok = Tokenizer.from_pretrained(random_folder)
    ids = tok.encode_chat(HI, add_generation_prompt=True).ids
    want = Engine(KExaone.from_pretrained(random_folder)).generate(
        [ids], SamplingParams(max_new_tokens=16, temperature=0, stop_token_ids=(53,))).token_ids[0]
    r = live.client.chat.completions.create(model="tiny", messages=HI, max_tokens=16, temperature=0, logprobs=True)
    assert [x.token for x in r.choices[0].logprobs.content] == [tok.decode([t]) for t in want]
    assert r.usage.completion_tokens == len(want) and r.usage.prompt_tokens == len(ids)
    text = tok.decode([t for t in want if t != 53], skip_special_tokens=True)
    expect = split_reply(THINKING_HEAD + text)
    m = r.choices[0].message
    assert (m.content or "") == expect["content"]
    assert m.reasoning_content == m.reasoning == (expect["reasoning_content"] or None)
    # streamed: the same tokens (logprobs ride on the chunks), the same text
    chunks = list(live.client.chat.completions.create(model="tiny", messages=HI, max_tokens=16, temperature=0,
                                                      logprobs=True, stream=True,
                                                      stream_options={"include_usage": True}))
    toks = [x.token for c in chunks if c.choices and c.choices[0].logprobs for x in c.choices[0].logprobs.content]
    assert toks == [tok.decode([t]) for t in want]
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning == expect["reasoning_content"] and content == expect["content"]
    assert chunks[-1].usage.completion_tokens == len(want) and chunks[-1].choices == []
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
           [r.choices[0].finish_reason]


def test_completions_echo_logprobs_as_lm_eval_reads_them(live, random_folder):
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    tok = Tokenizer.from_pretrained(random_folder)
    ctx, cont = tok.encode("the quick brown"), tok.encode(" fox jumps")
    r = httpx.post(live.url + "/v1/completions", json={"model": "tiny", "prompt": ctx + cont, "max_tokens": 1,
                                                       "temperature": 0, "logprobs": 1, "echo": True}).json()
    lp = r["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None and len(lp["tokens"]) == len(ctx + cont) + 1
    with torch.no_grad():
        logits = KExaone.from_pretrained(random_folder)(torch.tensor([ctx + cont])).logits[0].float()
    want = torch.log_softmax(logits, -1)[torch.arange(len(ctx), len(ctx + cont)) - 1, torch.tensor(cont)]
    (score, greedy), = LocalCompletionsAPI.parse_logprobs(r, tokens=[ctx + cont], ctxlens=[len(ctx)])
    assert score == pytest.approx(want.sum().item(), abs=1e-3)
    assert greedy == bool((logits[len(ctx) - 1:len(ctx + cont) - 1].argmax(-1) == torch.tensor(cont)).all())
    # text prompt, openai client, stop string
    c = live.client.completions.create(model="tiny", prompt="the quick", max_tokens=8, temperature=0, echo=True)
    assert c.choices[0].text.startswith("the quick")


# ---------------------------------------------------------------------------------------------- reasoning, tools
@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_split_both_modes(memorised, stream):
    def ask(thinking):
        kw = dict(model="tiny", messages=HI, temperature=0, max_tokens=40,
                  extra_body={"chat_template_kwargs": {"enable_thinking": thinking}} if thinking is not None else {})
        if not stream:
            m = memorised.client.chat.completions.create(**kw).choices[0].message
            return m.reasoning_content, m.reasoning, m.content
        chunks = list(memorised.client.chat.completions.create(stream=True, **kw))
        pick = lambda f: "".join(getattr(c.choices[0].delta, f, None) or "" for c in chunks) or None  # noqa: E731
        return pick("reasoning_content"), pick("reasoning"), pick("content")

    assert ask(None) == ("A greeting.", "A greeting.", "Hello there!")  # K-EXAONE's default: thinking on
    assert ask(True) == ("A greeting.", "A greeting.", "Hello there!")
    assert ask(False) == (None, None, "Hi, friend.")


def test_tool_call_parsed_and_streamed_like_openai(memorised):
    r = memorised.client.chat.completions.create(model="tiny", messages=WEATHER, tools=TOOLS, temperature=0,
                                                 max_tokens=60)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.reasoning_content == "Call the tool."
    (call,) = c.message.tool_calls
    assert call.type == "function" and call.id.startswith("chatcmpl-tool-")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Seoul"}
    chunks = list(memorised.client.chat.completions.create(model="tiny", messages=WEATHER, tools=TOOLS,
                                                           temperature=0, max_tokens=60, stream=True))
    deltas = [d for ch in chunks for d in (ch.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and deltas[0].function.arguments == ""
    assert json.loads("".join(d.function.arguments for d in deltas)) == {"city": "Seoul"}
    assert {d.index for d in deltas} == {0} and chunks[-1].choices[0].finish_reason == "tool_calls"
    # tool_choice "none": the tags stay text, no tool_calls
    r = memorised.client.chat.completions.create(model="tiny", messages=WEATHER, tools=TOOLS, tool_choice="none",
                                                 temperature=0, max_tokens=60)
    assert not r.choices[0].message.tool_calls and "<tool_call>" in r.choices[0].message.content
    # a named tool_choice forces the call's start; the (memorised) model completes the arguments
    r = memorised.client.chat.completions.create(
        model="tiny", messages=WEATHER, tools=TOOLS, temperature=0, max_tokens=60,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    # the tool result goes back through the template
    follow = WEATHER + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    n = httpx.post(memorised.url + "/tokenize", json={"messages": follow}).json()["count"]
    assert n > 0


def test_reply_stream_equals_parse_response():
    text = render(WEATHER + [MEMORISED[0][3]], tools=TOOLS).split("<|assistant|>\n", 1)[1]
    text = text + "trailing words <tool_call>{bad json}</tool_call> end"
    whole = parse_response(text)
    stream, parts = ReplyStream("", True), {"r": "", "c": "", "calls": []}
    for i in range(0, len(text), 3):  # 3-character pieces cut every tag somewhere
        r, c, calls = stream.push(text[i:i + 3], final=i + 3 >= len(text))
        parts["r"] += r
        parts["c"] += c
        parts["calls"] += calls
    assert (parts["r"], parts["c"], parts["calls"]) == (whole["reasoning_content"], whole["content"],
                                                        whole["tool_calls"])
    s = StopStrings(["STOP", "xy"])
    out = "".join(s.push(p) for p in ["ab", "cS", "TO", "P tail"]) + s.push("", final=True)
    assert out == "abc" and s.stopped


# ---------------------------------------------------------------------------------------------- errors
BAD = [
    ({"model": "nope", "messages": HI}, 400, "model"),
    ({"model": "tiny", "messages": [{"role": "bob", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({"model": "tiny", "messages": HI, "temperature": 5}, 400, "temperature"),
    ({"model": "tiny", "messages": HI, "top_p": 0}, 400, "top_p"),
    ({"model": "tiny", "messages": HI, "n": 0}, 400, "n"),
    ({"model": "tiny", "messages": HI, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": HI, "top_logprobs": 50, "logprobs": True}, 400, "top_logprobs"),
    ({"model": "tiny", "messages": HI, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "objekt"}}}]}, 400, "tools.0.function.parameters"),
    ({"model": "tiny", "messages": HI, "tool_choice": "required"}, 400, "tool_choice"),
    ({"model": "tiny", "messages": HI, "tools": TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "other"}}}, 400, "tool_choice"),
    ({"model": "tiny", "messages": HI, "chat_template_kwargs": {"enable_thinking": "yes"}}, 400,
     "chat_template_kwargs.enable_thinking"),
    ({"model": "tiny", "messages": HI, "max_tokens": 100000}, 400, None),
]


@pytest.mark.parametrize("body, status, param", BAD)
def test_bad_requests_get_the_error_envelope(live, body, status, param):
    r = httpx.post(live.url + "/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == status
    assert err["type"] == "BadRequestError" and err["param"] == param and err["message"]
    kwargs = {k: v for k, v in body.items() if k != "chat_template_kwargs"}
    extra = {k: v for k, v in body.items() if k == "chat_template_kwargs"}
    with pytest.raises(openai.BadRequestError):  # the official client sees the same
        live.client.chat.completions.create(**kwargs, extra_body=extra)


def test_transport_level_errors(live):
    r = httpx.post(live.url + "/v1/chat/completions", content=b'{"model": "tiny", "messa',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    # a 1.1 MB prompt passes the size limit and gets the context-length 400, naming both lengths
    r = httpx.post(live.url + "/v1/chat/completions", json={"model": "tiny", "messages": [
        {"role": "user", "content": "the lazy dog " * 85_000}]}, timeout=60)
    assert r.status_code == 400 and "maximum context length is 8192 tokens" in r.json()["error"]["message"]
    assert "prompt has" in r.json()["error"]["message"]
    r = httpx.post(live.url + "/v1/completions", json={"model": "tiny", "prompt": [999999]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(live.url + "/v1/chat/completions", content=b"x" * (9 * 2**20),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == 413
    r = httpx.get(live.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"


def test_api_key_and_small_endpoints(random_folder):
    srv = Live(random_folder, "--api-key", "sekret")
    try:
        assert httpx.get(srv.url + "/health").status_code == 200  # health stays open (load balancers)
        r = httpx.get(srv.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "AuthenticationError"
        with pytest.raises(openai.AuthenticationError):
            srv.client.models.list()
        ok = openai.OpenAI(base_url=srv.url + "/v1", api_key="sekret")
        (m,) = ok.models.list().data
        assert m.id == "tiny" and m.max_model_len == 8192
        head = {"Authorization": "Bearer sekret"}
        ids = httpx.post(srv.url + "/tokenize", json={"prompt": "the quick brown"}, headers=head).json()["tokens"]
        assert httpx.post(srv.url + "/detokenize", json={"tokens": ids}, headers=head).json()["prompt"] == \
               "the quick brown"
        page = httpx.get(srv.url + "/")
        assert page.status_code == 200 and "<html" in page.text.lower() or page.status_code == 404 and \
               "index.html" in page.json()["error"]["message"]
    finally:
        srv.close()


# ---------------------------------------------------------------------------------------------- load
def test_cancellation_frees_the_slot(live):
    with httpx.stream("POST", live.url + "/v1/chat/completions",
                      json={"model": "tiny", "messages": HI, "max_tokens": 5000, "stream": True, "ignore_eos": True,
                            "chat_template_kwargs": {"enable_thinking": False}}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert live.running() == 1
    end = time.time() + 10
    while live.running() != 0 and time.time() < end:
        time.sleep(0.05)
    assert live.running() == 0 and live.scheduler.num_running == 0


def test_32_concurrent_streams(live, random_folder):
    tok = Tokenizer.from_pretrained(random_folder)
    prompts = [[{"role": "user", "content": f"the quick brown fox {i}"}] for i in range(4)]
    engine = Engine(KExaone.from_pretrained(random_folder))
    want = [engine.generate([tok.encode_chat(p, add_generation_prompt=True).ids],
                            SamplingParams(max_new_tokens=8, temperature=0, stop_token_ids=(53,))).token_ids[0]
            for p in prompts]
    results, errors = [None] * 32, []

    def client(i):
        try:
            chunks = live.client.chat.completions.create(model="tiny", messages=prompts[i % 4], max_tokens=8,
                                                         temperature=0, stream=True, logprobs=True)
            results[i] = [x.token for c in chunks if c.choices and c.choices[0].logprobs
                          for x in c.choices[0].logprobs.content]
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]  # 32 streams, 8 slots
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert all(results[i] == [tok.decode([t]) for t in want[i % 4]] for i in range(32))
    assert live.running() == 0


def test_queue_full_is_503(random_folder):
    srv = Live(random_folder, "--max-batch", 1, "--max-waiting", 1)
    try:
        body = {"model": "tiny", "messages": HI, "max_tokens": 5000, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body) as a, \
                httpx.stream("POST", srv.url + "/v1/chat/completions", json=body) as b:
            lines_a, lines_b = a.iter_lines(), b.iter_lines()  # kept: a dropped iterator closes its stream
            next(lines_a)
            next(lines_b)
            r = httpx.post(srv.url + "/v1/chat/completions", json=body)
            assert r.status_code == 503 and r.json()["error"]["type"] == "ServiceUnavailableError"
    finally:
        srv.close()


def test_cli_prints_url_and_stops_on_sigterm(random_folder, tmp_path, capsys):
    from kexa.cli import main as kexa_main

    assert kexa_main(["serve", "--model", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    p = subprocess.Popen([sys.executable, "-m", "kexa.cli", "serve", "--model", str(random_folder), "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("kexa serve: ready at http://127.0.0.1:"), line + p.stderr.read()
        url = line.split()[4]
        assert httpx.get(url + "/health").status_code == 200
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
