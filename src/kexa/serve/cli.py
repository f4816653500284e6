"""`kexa serve`: an OpenAI-compatible server for a model folder, with continuous batching and a chat page.

    kexa serve --model runs/nano [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch N]
               [--speculative K] [--compile] [--served-model-name NAME]

Prints `kexa serve: ready at http://HOST:PORT` once the socket listens; SIGINT/SIGTERM stop it cleanly
(uvicorn drains the connections, then the scheduler thread ends). Sampling defaults come from the
folder's generation_config.json when present (temperature, top_p, top_k), as vLLM does.
Bad input (not a model folder, no tokenizer, invalid options) -> one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from ..infer.cli import DTYPES, UsageError, load


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kexa serve", description="OpenAI-compatible HTTP server for a kexa model folder")
    p.add_argument("--model", required=True, help="model folder (config.json + safetensors + tokenizer files)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on the API routes")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together (KV-cache slots)")
    p.add_argument("--max-waiting", type=int, default=256, help="queued requests beyond which new ones get 503")
    p.add_argument("--max-model-len", type=int, default=None, help="context per request (default: the model's)")
    p.add_argument("--step-tokens", type=int, default=512, help="tokens per scheduler step (decode rows + prefill)")
    p.add_argument("--speculative", type=int, nargs="?", const=1, default=0, metavar="K",
                   help="MTP self-speculative decoding with K = 1 or 2 drafted tokens per step (K defaults to 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (tens of seconds first)")
    p.add_argument("--served-model-name", default=None, help="name in /v1/models (default: the folder's name)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-request-bytes", type=int, default=8 * 2**20)
    p.add_argument("--cors-origin", action="append", default=None, help="allow this browser origin (repeatable)")
    p.add_argument("--log-level", default="warning")
    return p


def build(args):
    """(app, scheduler) from parsed arguments; every bad input is a UsageError."""
    from ..infer.scheduler import Scheduler
    from .app import create_app

    if args.speculative not in (0, 1, 2):
        raise UsageError(f"--speculative K: K must be 1 or 2 drafted tokens per step, got {args.speculative}")
    if args.speculative and args.compile:
        raise UsageError("--speculative and --compile do not combine: the compiled step is plain decoding and "
                         "speculative steps run eager; choose one")
    if args.max_batch < 1 or args.max_waiting < 0 or args.step_tokens < 1:
        raise UsageError("--max-batch and --step-tokens must be >= 1 and --max-waiting >= 0")
    if args.max_request_bytes < 2**20:
        raise UsageError("--max-request-bytes must be at least 1 MB (1048576), so long prompts reach the "
                         "context-length check")
    model, tok, engine = load(args)
    if args.speculative and not model.config.has_mtp:
        raise UsageError(f"--speculative needs the MTP block, and the model in {args.model} has none "
                         f"(num_nextn_predict_layers = 0)")
    defaults = {}
    gen_cfg = Path(args.model) / "generation_config.json"
    if gen_cfg.exists():
        try:
            cfg = json.loads(gen_cfg.read_text("utf-8"))
        except json.JSONDecodeError as e:
            raise UsageError(f"{gen_cfg}: not valid JSON: {e}") from e
        defaults = {k: cfg[k] for k in ("temperature", "top_p", "top_k") if k in cfg}
    scheduler = Scheduler(engine, max_batch=args.max_batch, max_waiting=args.max_waiting,
                          step_tokens=args.step_tokens, max_len=args.max_model_len, speculative=args.speculative)
    if args.compile and scheduler.cache.max_len > 2048:
        # static shapes: the compiled step attends over the whole cache on global layers, every step
        print(f"kexa serve: warning: --compile attends over the whole {scheduler.cache.max_len}-position cache in "
              f"every decode step (static shapes); at the 16K nano context that is ~20x slower than eager "
              f"(benchmarks/results/serve_step.json): pass --max-model-len (e.g. 2048) with --compile",
              file=sys.stderr)
    name = args.served_model_name or Path(args.model).resolve().name
    app = create_app(scheduler, tok, name, api_key=args.api_key, max_request_bytes=args.max_request_bytes,
                     defaults=defaults, cors_origins=args.cors_origin)
    return app, scheduler


class _Stopped(Exception):
    pass


def _stopped(signum, frame):
    raise _Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = _parser().parse_args(argv)
    try:
        app, scheduler = build(args)
    except UsageError as e:
        print(f"kexa serve: error: {e}", file=sys.stderr)
        return 2

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                print(f"kexa serve: ready at http://{host}:{port} (model {app.state.server.model_name})", flush=True)

    server = Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                   timeout_graceful_shutdown=5))
    # uvicorn catches SIGINT/SIGTERM, drains, then re-raises the signal to the handler it found
    # installed: make that one end the process cleanly rather than die by the signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    scheduler.start()
    try:
        server.run()
    except _Stopped:
        pass
    finally:
        scheduler.stop()
    if not server.started:
        print(f"kexa serve: error: could not listen on {args.host}:{args.port}", file=sys.stderr)
        return 2
    print("kexa serve: stopped", file=sys.stderr)
    return 0
