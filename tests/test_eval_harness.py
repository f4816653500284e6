"""The harness: resume after a crash loses nothing and re-asks nothing; endpoint errors and timeouts become
per-item errors (never a crash); results.json / results.md shapes and recorded settings; the CLI on a tiny
model folder; the endpoint client against a real `kexa serve` equals the in-process engine client."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from kexa import KExaone, ModelConfig
from kexa.client import EndpointClient, EngineClient, GenParams, ModelClient, Reply
from kexa.eval.cli import main as eval_main
from kexa.eval.harness import read_records, run_eval
from kexa.eval.suites import build_suite
from kexa.tokenizer import train_bpe


class OracleClient(ModelClient):
    """Answers from a prompt -> content table (right for some items, wrong for others); counts what it is asked."""

    name = "oracle"

    def __init__(self, answers: dict[str, str], crash_after: int | None = None):
        self.answers, self.crash_after, self.asked, self.calls = answers, crash_after, [], 0

    def chat(self, conversations, params, thinking=True, tools=None):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise RuntimeError("simulated crash (power cut)")
        out = []
        for messages in conversations:
            prompt = messages[-1]["content"]
            self.asked.append(prompt)
            out.append(Reply(text=self.answers[prompt], content=self.answers[prompt], finish_reason="stop"))
        return out


def _oracle(n=20):
    items = build_suite("math").items(n)
    return {it["messages"][-1]["content"]: f"\\boxed{{{it['gold'] if i % 3 else 12345}}}" for i, it in enumerate(items)}


def test_resume_after_crash_loses_nothing(tmp_path):
    answers = _oracle(20)
    crashing = OracleClient(answers, crash_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_eval(crashing, ["math"], ["reasoning"], tmp_path / "run", limit=20, chunk=4, progress=lambda m: None)
    path = tmp_path / "run" / "items" / "math.reasoning.jsonl"
    assert len(read_records(path)) == 12  # three chunks were written before the crash
    with open(path, "a") as f:
        f.write('{"id": "torn li')  # a crash in the middle of a write
    resumed = OracleClient(answers)
    result = run_eval(resumed, ["math"], ["reasoning"], tmp_path / "run", limit=20, chunk=4, progress=lambda m: None)
    first_twelve = {r["item"]["messages"][-1]["content"] for r in read_records(path).values()
                    if r["item"]["id"] in {it["id"] for it in build_suite("math").items(12)}}
    assert len(resumed.asked) == 8 and not set(resumed.asked) & first_twelve  # only the missing items were asked
    fresh = run_eval(OracleClient(answers), ["math"], ["reasoning"], tmp_path / "fresh", limit=20, chunk=4,
                     progress=lambda m: None)
    assert result["suites"] == fresh["suites"]
    assert result["suites"]["math"]["accuracy"] == pytest.approx(13 / 20)  # i % 3 != 0 are right
    assert result["suites"]["math"]["n"] == 20 and result["suites"]["math"]["errors"] == 0


def test_results_shape_and_settings(tmp_path):
    answers = _oracle(6)
    result = run_eval(OracleClient(answers), ["math"], ["reasoning", "plain"], tmp_path, limit=6,
                      progress=lambda m: None)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    m = on_disk["suites"]["math"]
    assert m["accuracy"] == m["reasoning/accuracy"] and "plain/accuracy" in m
    s = on_disk["settings"]
    assert (s["temperature"], s["top_p"], s["mtp"], s["modes"], s["limit"]) == (1.0, 0.95, False, ["reasoning", "plain"], 6)
    assert s["max_tokens_by_suite"]["math"] == 4096 and "verifier" in s["suite_settings"]["math"]
    md = (tmp_path / "results.md").read_text()
    assert "| math | accuracy |" in md and "reasoning | plain" in md
    assert len(read_records(tmp_path / "items" / "math.plain.jsonl")) == 6


# ---------------------------------------------------------------------------------------------- endpoint errors
class FakeAPI(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose behaviour the prompt picks: ok / fail500 / bad400 / slow / verdict."""

    hits: dict[str, int] = {}

    def log_message(self, *a):
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "x"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        kind = next((k for k in ("fail500", "bad400", "slow", "verdict") if k in prompt), "ok")
        FakeAPI.hits[kind] = FakeAPI.hits.get(kind, 0) + 1
        if kind == "fail500":
            return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
        if kind == "bad400":
            return self._send(400, {"error": {"message": "prompt too long", "type": "invalid_request_error"}})
        if kind == "slow":
            time.sleep(1.5)
        thinking = body.get("chat_template_kwargs", {}).get("enable_thinking")
        content = "verdict: unsafe" if kind == "verdict" else "\\boxed{4}"
        msg = {"role": "assistant", "content": content, "reasoning_content": "2+2" if thinking else None}
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
                         "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]})


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the client gave up on a slow request (that is the test): no traceback on stderr


@pytest.fixture(scope="module")
def fake_api():
    server = QuietServer(("127.0.0.1", 0), FakeAPI)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_endpoint_errors_and_timeouts_are_per_item(fake_api, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"2+2? {k}", "answer": "4"}) + "\n"
                            for k in ("ok", "fail500", "bad400", "slow", "ok again")))
    FakeAPI.hits = {}
    client = EndpointClient(fake_api, timeout_s=0.5, retries=1, backoff_s=0.01)
    result = run_eval(client, ["math"], ["reasoning"], tmp_path / "run", suite_options={"math": {"data": str(data)}},
                      progress=lambda m: None)
    m = result["suites"]["math"]
    assert (m["n"], m["errors"], m["accuracy"]) == (2, 3, 1.0)
    errors = {r["item"]["problem"].split()[-1]: r["error"] for r in read_records(tmp_path / "run" / "items" /
                                                                                 "math.reasoning.jsonl").values()}
    assert errors["ok"] is None and "HTTP 500" in errors["fail500"] and "HTTP 400" in errors["bad400"]
    assert "timeout" in errors["slow"]
    assert FakeAPI.hits["fail500"] == 2 and FakeAPI.hits["bad400"] == 1  # 5xx retried, 4xx not
    ok = next(r for r in read_records(tmp_path / "run" / "items" / "math.reasoning.jsonl").values() if r["id"] == "0")
    assert ok["reply"]["reasoning"] == "2+2" and ok["reply"]["content"] == "\\boxed{4}"


def test_unreachable_endpoint_is_one_line(capsys, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    code = eval_main(["run", "--endpoint", f"http://127.0.0.1:{port}/v1", "--suite", "math", "--retries", "0",
                      "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot list models" in err


@pytest.mark.parametrize("argv, message", [
    (["--suite", "nope"], "known suites"),
    (["--suite", "math", "--mode", "fast"], "--mode"),
    (["--suite", "math", "--option", "mcq.per_cell=2"], "not being run"),
    (["--suite", "mcq", "--data", "mcq=/no/such.jsonl"], "no such file"),
    (["--suite", "math", "--option", "math.colour=red"], "bad option"),
])
def test_bad_arguments_one_line(argv, message, model_folder, tmp_path, capsys):
    code = eval_main(["run", "--model", str(model_folder), "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


# ---------------------------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalmodel")
    (root / "c.txt").write_text("Answer: B. the quick brown fox 2 + 2 = 4 Question hello 안녕하세요\n" * 40, "utf-8")
    tok = train_bpe([str(root / "c.txt")], vocab_size=400)
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny").replace(vocab_size=tok.vocab_size, max_position_embeddings=256))
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


def test_cli_run_on_a_model_folder(model_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = eval_main(["run", "--model", str(model_folder), "--suite", "mcq,mcq-loglik,mrcr", "--mode", "both",
                      "--limit", "2", "--max-tokens", "4", "--out", str(out), "--json",
                      "--option", "mrcr.turns=40"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["suites"]) == {"mcq", "mcq-loglik", "mrcr"}
    assert result["suites"]["mcq"]["n"] == 2 and "plain/accuracy" in result["suites"]["mcq"]
    assert result["suites"]["mcq-loglik"]["n"] == 2  # log-likelihood scoring runs once, not per mode
    # 40 turns do not fit a 256-token context: every MRCR item fails alone with a clear error, the run goes on
    assert result["suites"]["mrcr"]["errors"] == 2 and result["suites"]["mrcr"]["n"] == 0
    rec = next(iter(read_records(out / "items" / "mrcr.reasoning.jsonl").values()))
    assert "does not fit the model's context of 256" in rec["error"]
    assert (out / "results.md").exists() and result["settings"]["target"]["client"] == "EngineClient"


def test_endpoint_client_equals_engine_client(model_folder):
    """The same model served by `kexa serve` and run in-process: same greedy replies, same log-likelihoods."""
    from test_serve import Live  # the server built exactly as `kexa serve` builds it
    engine = EngineClient.from_folder(model_folder)
    live = Live(model_folder)
    try:
        endpoint = EndpointClient(live.url, tokenizer=engine.tok)
        params = GenParams(max_tokens=6, temperature=0.0)
        chats = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "2 + 2 = ?"}]]
        for thinking in (True, False):
            a, b = engine.chat(chats, params, thinking), endpoint.chat(chats, params, thinking)
            assert [r.error for r in b] == [None, None]
            assert [(r.reasoning, r.content) for r in a] == [(r.reasoning, r.content) for r in b]
        pairs = [("the quick brown", " fox"), ("Answer:", " B")]
        for (x, gx), (y, gy) in zip(engine.loglikelihood(pairs), endpoint.loglikelihood(pairs)):
            assert x == pytest.approx(y, abs=1e-3) and gx == gy
    finally:
        live.close()


def test_stages_table(tmp_path):
    from kexa.eval.harness import stages_table
    answers = _oracle(6)
    wrong = {k: "\\boxed{12345}" for k in answers}
    results = {"sft": run_eval(OracleClient(answers), ["math"], ["reasoning", "plain"], tmp_path / "a", limit=6,
                               progress=lambda m: None),
               "base": run_eval(OracleClient(wrong), ["math"], ["reasoning"], tmp_path / "b", limit=6,
                                progress=lambda m: None)}
    table = stages_table(results)
    assert "| suite | metric | sft reasoning | sft plain | base reasoning | base plain |" in table
    assert "| math | accuracy | 0.6667 | 0.6667 | 0.0000 | - |" in table
