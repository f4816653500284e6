"""Serving throughput: `kexa serve` vs `transformers serve --continuous-batching`, same nano model folder.

One model folder is written once (the `nano` preset, random weights, fp32, MTP off — transformers
has no MTP; a small BPE tokenizer saved beside it, with the chat template), then each server runs in
its own subprocess on 127.0.0.1 with the same thread count, and the same load is replayed against it:
- `--clients` concurrent streaming chat completions (distinct prompts, greedy, `--max-tokens` each):
  aggregate output tokens/s (all completion tokens / wall time of the whole burst) and median time
  to first token (request sent -> first chunk carrying generated text);
- batch 1 through `kexa serve` (one streaming request, `ignore_eos`) vs `kexa generate --json` on the
  same prompt: decode tokens/s, i.e. the HTTP + scheduler overhead on one stream;
- with --soak S: 64 streams (--soak-clients) sending request after request (16 tokens each; every
  third one hangs up after its first chunk) for S seconds: errors, requests served, then the
  running/waiting gauges (0 = no leaked slot) and the server's peak resident memory before and after.
Output tokens are the server's own `usage.completion_tokens` when it reports one (stream_options),
else the number of chunks with text. The machine is shared: ratios from one run, not absolute speed.

    .venv/bin/python benchmarks/serve.py                         # 16 clients x 64 tokens, 1 thread, 2 reps
    .venv/bin/python benchmarks/serve.py --clients 4 --max-tokens 16 --skip-hf   # quick check
    .venv/bin/python benchmarks/serve.py --skip-hf --reps 1 --soak 60 --json benchmarks/results/serve_soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CORPUS = "the quick brown fox jumps over the lazy dog. a model serves many users at once. " * 200


def build_folder(path: Path) -> Path:
    import torch

    from kexa import KExaone, ModelConfig
    from kexa.tokenizer import train_bpe

    (path / "corpus.txt").write_text(CORPUS, "utf-8")
    tok = train_bpe([str(path / "corpus.txt")], vocab_size=1024)
    torch.manual_seed(0)
    # the nano shape with the tokenizer's vocabulary: every sampled id is a token with text, so time to
    # first token is measured on real text (ids past a tokenizer's vocabulary decode to nothing)
    cfg = ModelConfig.preset("nano").replace(vocab_size=tok.vocab_size, num_nextn_predict_layers=0)
    KExaone(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ServerProcess:
    def __init__(self, cmd: list[str], port: int, env: dict, timeout: float = 600):
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"{cmd[:4]} did not become healthy in {timeout} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def one_stream(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int,
                     extra: dict) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, **extra}
    t0 = time.perf_counter()
    first, last, chunks, usage = None, None, 0, None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            msg = json.loads(line[6:])
            if msg.get("usage"):
                usage = msg["usage"]
            for ch in msg.get("choices", []):
                d = ch.get("delta") or {}
                if d.get("content") or d.get("reasoning_content") or d.get("reasoning"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
    tokens = usage["completion_tokens"] if usage and usage.get("completion_tokens") else chunks
    return {"ttft": (first or time.perf_counter()) - t0, "tokens": tokens, "first": first, "last": last,
            "chunks": chunks}


async def burst(url: str, model: str, clients: int, max_tokens: int, extra: dict) -> dict:
    prompts = [f"request {i}: tell me about the quick brown fox and the lazy dog" for i in range(clients)]
    async with httpx.AsyncClient(timeout=httpx.Timeout(1200.0)) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*[one_stream(client, url, model, p, max_tokens, extra) for p in prompts],
                                       return_exceptions=True)
        wall = time.perf_counter() - t0
    errors = [repr(r) for r in results if isinstance(r, Exception)]
    ok = [r for r in results if not isinstance(r, Exception)]
    tokens = sum(r["tokens"] for r in ok)
    return {"clients": clients, "errors": errors, "wall_s": round(wall, 3), "output_tokens": tokens,
            "output_tokens_per_s": round(tokens / wall, 3),
            "median_ttft_s": round(statistics.median(r["ttft"] for r in ok), 4) if ok else None}


async def soak(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` streams that each send request after request for `seconds` (every third one hangs up
    after its first chunk); counts what went wrong."""
    end, done, cancelled, errors = time.perf_counter() + seconds, [0], [0], []

    async def loop(i: int):
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:
            n = 0
            while time.perf_counter() < end:
                n += 1
                try:
                    if n % 3 == 0:  # every third request hangs up after its first chunk: the slot must come back
                        body = {"model": model, "messages": [{"role": "user", "content": f"stream {i}"}],
                                "max_tokens": 1000, "stream": True, "ignore_eos": True}
                        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                            async for _ in r.aiter_lines():
                                break
                        cancelled[0] += 1
                        continue
                    r = await one_stream(client, url, model, f"stream {i} request {done[0]}", max_tokens, {})
                    done[0] += 1
                    if r["tokens"] < 1:
                        errors.append(f"stream {i}: no tokens")
                except Exception as e:  # noqa: BLE001 (counted and reported)
                    errors.append(repr(e)[:200])

    t0 = time.perf_counter()
    await asyncio.gather(*[loop(i) for i in range(clients)])
    return {"clients": clients, "seconds": round(time.perf_counter() - t0, 1), "requests": done[0],
            "hung_up": cancelled[0],
            "errors": len(errors), "error_samples": errors[:5]}


def server_state(srv: ServerProcess) -> dict:
    """Running/waiting gauges from /metrics and the server process's peak resident memory (VmHWM)."""
    metrics = httpx.get(srv.url + "/metrics").text
    gauge = lambda name: float(next(l for l in metrics.splitlines() if l.startswith(name)).split()[-1])  # noqa: E731
    status = Path(f"/proc/{srv.proc.pid}/status").read_text()
    peak_kb = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
    return {"running": gauge("kexa:num_requests_running"), "waiting": gauge("kexa:num_requests_waiting"),
            "peak_rss_mb": round(peak_kb / 1024, 1)}


def kexa_generate(folder: Path, prompt: str, tokens: int) -> dict:
    """`kexa generate --json` in this process (same code path as the CLI, no import/load per run)."""
    import contextlib
    import io

    from kexa.cli import main as kexa_main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = kexa_main(["generate", "--model", str(folder), "--chat", "--no-think", "--prompt", prompt,
                          "--max-new-tokens", str(tokens), "--temperature", "0", "--json"])
    assert code == 0, buf.getvalue()
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def median_of(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 4)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--batch1-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=2, help="alternating repetitions; medians are reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                   help="also run --soak-clients streams against kexa serve for this long (issue 15: 64 for 60 s)")
    p.add_argument("--soak-clients", type=int, default=64)
    p.add_argument("--json", default=str(ROOT / "benchmarks/results/serve.json"))
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TRANSFORMERS_VERBOSITY="error",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")
    out: dict = {"config": {"model": "nano shape, vocabulary of the 1024-token BPE (random weights, fp32, MTP off)",
                            "clients": args.clients, "max_tokens": args.max_tokens, "threads": args.threads,
                            "batch1_tokens": args.batch1_tokens, "reps": args.reps}}
    prompt = "tell me about the quick brown fox"
    b1_body = {"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp))
        py = sys.executable
        servers = {}
        try:
            port = free_port()
            servers["kexa"] = (ServerProcess([py, "-m", "kexa.cli", "serve", "--model", str(folder),
                                              "--port", str(port), "--max-batch", str(args.clients),
                                              "--served-model-name", "nano"], port, env), "nano")
            if not args.skip_hf:
                port = free_port()
                servers["transformers"] = (ServerProcess(
                    [str(Path(py).parent / "transformers"), "serve", str(folder), "--continuous-batching",
                     "--device", "cpu", "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)], port, env),
                    str(folder))
            for srv, model in servers.values():  # warm-up (transformers loads the model on first use)
                asyncio.run(burst(srv.url, model, 2, 4, {}))
            bursts = {name: [] for name in servers}
            b1_server, b1_generate = [], []
            for rep in range(args.reps):  # alternate, so load from other users hits both sides alike
                for name, (srv, model) in servers.items():
                    bursts[name].append(asyncio.run(burst(srv.url, model, args.clients, args.max_tokens, {})))
                    print(f"rep {rep} {name}:", bursts[name][-1], flush=True)
                srv, model = servers["kexa"]
                one = asyncio.run(one_stream(httpx.AsyncClient(timeout=600), srv.url, model, prompt,
                                             args.batch1_tokens, b1_body))
                b1_server.append({"tps": (one["tokens"] - 1) / (one["last"] - one["first"])})
                b1_generate.append({"tps": kexa_generate(folder, prompt, args.batch1_tokens)["decode_tokens_per_s"]})
                print(f"rep {rep} batch 1: server {b1_server[-1]['tps']:.2f} tok/s, "
                      f"kexa generate {b1_generate[-1]['tps']:.2f} tok/s", flush=True)
            if args.soak:
                srv, model = servers["kexa"]
                before = server_state(srv)
                out["soak"] = asyncio.run(soak(srv.url, model, args.soak_clients, args.soak, 16))
                time.sleep(1.0)  # the last cancellations land between steps
                out["soak"].update(rss_before_mb=before["peak_rss_mb"], **server_state(srv))
                print("soak:", out["soak"], flush=True)
        finally:
            for srv, _ in servers.values():
                srv.close()
    for name, runs in bursts.items():
        out[name] = {"output_tokens_per_s": median_of(runs, "output_tokens_per_s"),
                     "median_ttft_s": median_of(runs, "median_ttft_s"),
                     "errors": sum(len(r["errors"]) for r in runs), "runs": runs}
    out["batch1"] = {"server_decode_tokens_per_s": median_of(b1_server, "tps"),
                     "generate_decode_tokens_per_s": median_of(b1_generate, "tps")}
    out["batch1"]["server_over_generate"] = round(out["batch1"]["server_decode_tokens_per_s"]
                                                  / out["batch1"]["generate_decode_tokens_per_s"], 3)
    if "transformers" in out:
        k, h = out["kexa"], out["transformers"]
        out["ratios"] = {"throughput_kexa_over_hf": round(k["output_tokens_per_s"] / h["output_tokens_per_s"], 3),
                         "median_ttft_kexa_over_hf": round(k["median_ttft_s"] / h["median_ttft_s"], 3)}
    out["targets"] = {"throughput_kexa_over_hf": ">= 2", "median_ttft_kexa_over_hf": "<= 0.5",
                      "batch1_server_over_generate": ">= 0.9"}
    import transformers

    out["versions"] = {"transformers": transformers.__version__, "torch": torch.__version__}
    print(json.dumps({k: out[k] for k in ("batch1", "ratios", "soak") if k in out}))
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
