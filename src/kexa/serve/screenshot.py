"""A picture of the chat page talking to a model: start `kexa serve` on a model folder, drive the page it
serves (static/index.html) in headless Chromium, keep a PNG and what the page stored of the conversation.

    python -m kexa.serve.screenshot --model runs/nano/model --out chat.png \
        [--prompt "What is 47 + 38?" --thinking --prompt "한국어로 인사해 주세요." --no-thinking] \
        [--temperature 1.0] [--top-p 0.95] [--max-tokens 256] [--seed 0] [--timeout 300]

    from kexa.serve.screenshot import chat_screenshot, ScreenshotUnavailable
    result = chat_screenshot("runs/nano/model", "chat.png", turns=[("What is 47 + 38?", True)])
    # {"png": "chat.png", "turns": [{"prompt", "thinking", "reasoning", "content", ...}], "seconds": 12.3, ...}

The speedrun's report card shows the final model this way (issue 20). Choices:
- the server is the real one (`python -m kexa.cli serve --port 0`, same Python), so the picture is what a user
  sees after `kexa serve`; the page's own controls set thinking (per turn), temperature, top-p, max tokens and
  seed, and the turns go in through its message box;
- the browser is the operating system's Chromium (Debian's `chromium`), launched by Playwright with
  `executable_path`: Playwright's own browser download is not reachable here;
- the page is a 100vh app whose log scrolls inside it, so a "full page" screenshot would cut the conversation:
  the viewport grows to the log's height (up to MAX_HEIGHT px) before the picture is taken;
- anything missing (Playwright, Chromium, a server that does not get ready, a page that does not answer in
  time) is one `ScreenshotUnavailable` with a one-line reason: the caller records it and goes on. The server
  and the browser are always stopped (SIGTERM, then kill).

The helpers here (serve, launch_chromium, wait_listed, say, wait_idle, stored_conversation) are also the ones
tests/test_serve_page.py drives the page with.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import functools
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DEFAULT_TURNS = [("What is 47 + 38?", True), ("한국어로 인사해 주세요.", False)]
WIDTH, HEIGHT, MAX_HEIGHT = 1100, 800, 4000  # px: the viewport, and how tall it may grow to fit the log
STORE = "kexa-chat/v1"  # the page's localStorage key


class ScreenshotUnavailable(RuntimeError):
    """The screenshot could not be taken; the message is the one-line reason."""


NO_CHROMIUM = "no `chromium` on PATH (apt-get install chromium; Playwright's own browser download is not used)"


def _one_line(text: str, limit: int = 300) -> str:
    text = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- the browser ----------------------------------------------------------------------------------------

def find_chromium() -> str | None:
    """The operating system's Chromium (Debian names it `chromium`, Ubuntu's older packages `chromium-browser`)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch_chromium(playwright):
    """A headless Chromium browser from `sync_playwright()`; ScreenshotUnavailable when there is none."""
    path = find_chromium()
    if path is None:
        raise ScreenshotUnavailable(NO_CHROMIUM)
    from playwright.sync_api import Error

    try:
        # --no-sandbox: the sandbox needs user namespaces, which containers (and root) usually lack
        return playwright.chromium.launch(executable_path=path, args=["--headless", "--no-sandbox"])
    except Error as e:
        raise ScreenshotUnavailable(f"{path} did not start: {_one_line(e.message, 200)}") from e


# ---- the server -----------------------------------------------------------------------------------------

def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # SIGTERM: uvicorn's graceful stop (drains connections, then exits 0)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serve(model_dir, *args: str, timeout_s: float = 60.0) -> Iterator[tuple[str, str]]:
    """(url, served model name) of `kexa serve --model model_dir --port 0 *args` once it prints its ready line;
    stopped on exit. Not ready within timeout_s, or exited first -> ScreenshotUnavailable with its last lines."""
    proc = subprocess.Popen([sys.executable, "-m", "kexa.cli", "serve", "--model", str(model_dir), "--port", "0",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = collections.deque(maxlen=5)  # the server's last lines, for the reason when it does not get ready
    ready = threading.Event()
    found: list[tuple[str, str]] = []

    def read():  # drains the pipe for the server's whole life, so it never blocks on a full pipe
        for line in proc.stdout:
            tail.append(line.rstrip())
            if not found and (m := re.search(r"ready at (http://\S+) \(model (.+)\)", line)):
                found.append((m.group(1), m.group(2).strip()))
                ready.set()
        ready.set()  # end of output: the server exited

    threading.Thread(target=read, daemon=True).start()
    try:
        ended = ready.wait(timeout_s)
        if not found:
            if ended:  # its output ended: the process is exiting
                try:
                    state = f"exited with code {proc.wait(timeout=5)} before it was ready"
                except subprocess.TimeoutExpired:
                    state = "closed its output before it was ready"
            else:
                state = f"was not ready in {timeout_s:.0f} s"
            raise ScreenshotUnavailable(f"kexa serve {state}: {_one_line(chr(10).join(tail))}")
        yield found[0]
    finally:
        _stop(proc)


# ---- the page -------------------------------------------------------------------------------------------
# Waits use Playwright's `expect` (auto-retrying locator checks): `page.wait_for_function` evaluates a string in
# the page, which the page's Content-Security-Policy forbids. A failed `expect` raises AssertionError.

def _ms(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else timeout_s * 1000  # None: Playwright's default of 5 s


def wait_listed(page, model: str, timeout_s: float | None = None) -> None:
    """The page has listed `model` from the server and shows no error."""
    from playwright.sync_api import expect

    expect(page.locator("#model")).to_have_value(model, timeout=_ms(timeout_s))
    expect(page.locator("#status")).to_have_text("", timeout=_ms(timeout_s))


def open_chat(page, url: str, model: str, timeout_s: float | None = None) -> None:
    page.goto(f"{url}/")
    wait_listed(page, model, timeout_s)


def say(page, text: str) -> None:
    """Send a message as a user does: type it, press Enter (the page is busy when this returns)."""
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_idle(page, timeout_s: float | None = None) -> None:
    """The reply in flight has ended (complete, stopped or failed)."""
    from playwright.sync_api import expect

    expect(page.locator("#send")).to_be_enabled(timeout=_ms(timeout_s))
    expect(page.locator("#stop")).to_be_disabled(timeout=_ms(timeout_s))


def stored_conversation(page) -> list[dict]:
    """What the page keeps in localStorage: [{role: "user", content} | {role: "assistant", content, reasoning,
    tool_calls, usage?, finish_reason?, stopped?, error?, seconds?, showReasoning}]."""
    return page.evaluate(f"JSON.parse(localStorage.getItem('{STORE}')).conversation")


def _field(page, selector: str, value) -> None:
    page.fill(selector, "" if value is None else str(value))  # blank = the server's default


def chat_on_page(page, turns, *, temperature=1.0, top_p=0.95, max_tokens=256, seed=0,
                 timeout_s: float | None = None) -> list[dict]:
    """Send `turns` [(prompt, thinking)] through the page's controls, continuing its conversation, each after the
    last reply ended (timeout_s for all of them); open the reasoning block of every thinking turn (the page folds
    it when the answer starts). Returns one dict per turn from what the page stored."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    _field(page, "#temperature", temperature)
    _field(page, "#top_p", top_p)
    _field(page, "#max_tokens", max_tokens)
    _field(page, "#seed", seed)
    start = page.locator(".msg").count()  # the log shows the stored conversation, one article per message
    for prompt, thinking in turns:
        page.set_checked("#thinking", thinking)
        say(page, prompt)
        wait_idle(page, None if deadline is None else max(deadline - time.monotonic(), 1.0))
    conversation = stored_conversation(page)[start:]
    if len(conversation) != 2 * len(turns):  # a setting the page refused: the message stayed in the box
        status = page.locator("#status").inner_text()
        raise ScreenshotUnavailable(f"the page sent {len(conversation) // 2} of {len(turns)} turns: {status}")
    replies = page.locator(".msg.assistant")
    for i, (_, thinking) in enumerate(turns):
        details = replies.nth(start // 2 + i).locator("details.reasoning")
        if thinking and details.count() and details.get_attribute("open") is None:
            details.locator("summary").click()
    out = []
    for (prompt, thinking), reply in zip(turns, conversation[1::2]):
        out.append({"prompt": prompt, "thinking": thinking, "reasoning": reply.get("reasoning", ""),
                    "content": reply.get("content", ""), "finish_reason": reply.get("finish_reason"),
                    "completion_tokens": (reply.get("usage") or {}).get("completion_tokens"),
                    "error": reply.get("error")})
    return out


def fit_log(page, max_height: int = MAX_HEIGHT) -> int:
    """Grow the viewport until neither the conversation log nor the settings panel scrolls (at most max_height
    px); returns the new height. Blurs the message box, whose focus ring is not part of the conversation."""
    size = page.viewport_size
    overflow = page.evaluate("Math.max(...['log', 'settings'].map((id) => document.getElementById(id))"
                             ".map((e) => e.scrollHeight - e.clientHeight))")
    height = min(size["height"] + max(overflow, 0), max_height)
    page.set_viewport_size({"width": size["width"], "height": height})
    page.evaluate("document.getElementById('log').scrollTop = 0")  # when it still scrolls: from the first turn
    page.locator("#prompt").blur()
    return height


def _missing_font_warning(turns: list[dict]) -> list[str]:
    """Hangul without a Korean font renders as boxes: say so rather than keep a picture of boxes silently."""
    text = "".join(t["prompt"] + t["reasoning"] + t["content"] for t in turns)
    if not re.search("[\uac00-\ud7a3]", text) or shutil.which("fc-list") is None:
        return []
    fonts = subprocess.run(["fc-list", ":lang=ko", "family"], capture_output=True, text=True).stdout
    return [] if fonts.strip() else ["no Korean font installed (fc-list :lang=ko is empty): Hangul shows as boxes "
                                     "in the screenshot; apt-get install fonts-nanum (or fonts-noto-cjk)"]


def chat_screenshot(model_dir, out_png, turns=DEFAULT_TURNS, *, temperature=1.0, top_p=0.95, max_tokens=256,
                    seed=0, timeout_s: float = 300.0, width: int = WIDTH) -> dict:
    """Serve `model_dir`, talk to it through the chat page, save a PNG of the page at `out_png`.

    turns: [(prompt, thinking)], one conversation. temperature / top_p / max_tokens / seed: the page's settings
    (None = the server's default). timeout_s bounds the whole run. Returns {"png", "turns": [{"prompt",
    "thinking", "reasoning", "content", "finish_reason", "completion_tokens", "error"}], "seconds", "warnings"}.
    Raises ScreenshotUnavailable (one-line reason) when a piece is missing or does not answer in time."""
    started = time.monotonic()
    turns = [(str(prompt), bool(thinking)) for prompt, thinking in turns]
    if not turns:
        raise ValueError("chat_screenshot needs at least one (prompt, thinking) turn")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        raise ScreenshotUnavailable(f"Playwright is not installed ({e}): pip install playwright") from e
    if find_chromium() is None:  # before the server starts: the cheap check first
        raise ScreenshotUnavailable(NO_CHROMIUM)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    settings = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    shoot = functools.partial(_serve_and_shoot, model_dir, out_png, turns, settings, width, started + timeout_s)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no event loop here
        result = shoot()
    else:  # Playwright's sync API refuses to run inside an event loop (Jupyter, or a caller's own Playwright)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            result = pool.submit(shoot).result()
    return {"png": str(out_png), "turns": result, "seconds": round(time.monotonic() - started, 2),
            "warnings": _missing_font_warning(result)}


def _serve_and_shoot(model_dir, out_png: Path, turns, settings: dict, width: int, deadline: float) -> list[dict]:
    from playwright.sync_api import Error, sync_playwright

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    # one conversation, one request at a time: one KV-cache slot, not the default 16 (a GB at nano's 16K context)
    with serve(model_dir, "--max-batch", "1", timeout_s=left()) as (url, model), sync_playwright() as p:
        browser = launch_chromium(p)
        step = "opening the page"
        try:
            page = browser.new_page(viewport={"width": width, "height": HEIGHT}, color_scheme="light")
            page.set_default_timeout(left() * 1000)
            open_chat(page, url, model, left())
            step = "chatting"
            result = chat_on_page(page, turns, **settings, timeout_s=left())
            step = "taking the screenshot"
            fit_log(page)
            page.screenshot(path=str(out_png), full_page=True)
        except (Error, AssertionError) as e:  # a Playwright timeout, or an `expect` that never came true
            raise ScreenshotUnavailable(f"the chat page at {url}, {step}: {_one_line(e, 200)}") from e
        finally:
            browser.close()
    return result


# ---- command line ---------------------------------------------------------------------------------------

class _Turn(argparse.Action):
    """--prompt TEXT adds a turn (thinking on, K-EXAONE's default); --thinking / --no-thinking set the last one."""

    def __call__(self, parser, namespace, values, option_string=None):
        turns = namespace.turns if namespace.turns is not None else []
        if option_string == "--prompt":
            turns.append([values, True])
        elif not turns:
            parser.error(f"{option_string} sets the mode of the --prompt before it; give a --prompt first")
        else:
            turns[-1][1] = option_string == "--thinking"
        namespace.turns = turns


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kexa.serve.screenshot",
                                description="screenshot of the chat page of `kexa serve` talking to a model folder")
    p.add_argument("--model", required=True, help="model folder (what `kexa serve --model` takes)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--prompt", dest="turns", action=_Turn, metavar="TEXT",
                   help=f"a user turn (repeatable; default: {DEFAULT_TURNS})")
    p.add_argument("--thinking", dest="turns", action=_Turn, nargs=0, help="the previous --prompt thinks (default)")
    p.add_argument("--no-thinking", dest="turns", action=_Turn, nargs=0, help="the previous --prompt does not think")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    turns = [tuple(t) for t in args.turns] if args.turns else DEFAULT_TURNS
    try:
        result = chat_screenshot(args.model, args.out, turns, temperature=args.temperature, top_p=args.top_p,
                                 max_tokens=args.max_tokens, seed=args.seed, timeout_s=args.timeout)
    except ScreenshotUnavailable as e:
        print(f"kexa screenshot: unavailable: {e}", file=sys.stderr)
        return 1
    for warning in result["warnings"]:
        print(f"kexa screenshot: warning: {warning}", file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
