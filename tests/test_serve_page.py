"""The chat page of `kexa serve` (src/kexa/serve/static/index.html) in a real browser: headless Chromium from the
operating system's packages (`.ci/run` installs Debian's `chromium`; Playwright's own browser download is not
used), driven by Playwright.

Two layers:
- rendering, with the API mocked by `page.route` (deterministic streams): a reply containing <script>, an
  onerror image, a javascript: link renders as text; reasoning, tool calls, markdown, the request the page sends,
  errors as one line that lose nothing, the conversation kept across a reload;
- live, against `kexa serve` on a tiny model: a message streams back equal to the openai client's greedy reply,
  thinking on and off, the stop button aborts and the server frees the slot;
- kexa.serve.screenshot (the speedrun's picture of the page): its page driving against the mock, then
  chat_screenshot end to end on the tiny model, equal to the API; a missing browser or server is one reason.

The page-driving helpers (serve, say, wait_idle, stored_conversation, ...) are kexa.serve.screenshot's.

Screenshots go to tmp_path; `KEXA_PAGE_SCREENSHOTS=docs/img/serve pytest tests/test_serve_page.py` re-takes the
docs' ones.
"""

import base64
import hashlib
import json
import os
import re
import struct
from pathlib import Path

import pytest

import kexa
from tiny import save_tiny_model

pytest.importorskip("playwright", reason="the test extra installs Playwright")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from kexa.serve import screenshot  # noqa: E402
from kexa.serve.screenshot import (ScreenshotUnavailable, chat_on_page, chat_screenshot, find_chromium,  # noqa: E402
                                   launch_chromium, say, serve, stored_conversation, wait_idle, wait_listed)

PAGE = Path(kexa.__file__).parent / "serve" / "static" / "index.html"
ORIGIN = "http://kexa.test"  # mocked origin: page.route answers everything under it
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (.ci/run installs Debian's)")


def screenshot_dirs(tmp_path):
    extra = os.environ.get("KEXA_PAGE_SCREENSHOTS")
    return [tmp_path] + ([Path(extra)] if extra else [])


# ---- the page file itself ---------------------------------------------------------------------------------

def test_page_is_self_contained_and_its_policy_allows_only_its_own_code():
    html = PAGE.read_text("utf-8")
    code = re.sub(r"<!--.*?-->", "", html, flags=re.S)
    assert not re.search(r"(src|href)=\"(https?:)?//", code)  # no CDN: nothing loaded from elsewhere
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html and "document.write" not in html
    assert len(re.findall(r"<script\b", code)) == 1 and len(re.findall(r"<style\b", code)) == 1

    def digest(tag):
        text = re.search(rf"<{tag}>(.*?)</{tag}>", code, re.S).group(1)
        return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    for tag in ("style", "script"):
        assert f"{tag}-src '{digest(tag)}'" in csp, f"the <{tag}> changed: set {tag}-src '{digest(tag)}' in the CSP"
    assert "default-src 'none'" in csp and "unsafe" not in csp


# ---- a browser, and the page under a mocked API -----------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no `chromium` on PATH (.ci/run installs Debian's)")
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def chunk(delta=None, finish=None, usage=None):
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "tiny", "choices": choices,
            **({"usage": usage} if usage else {})}


def sse(*chunks, done=True, sep="\n\n"):
    events = [f"data: {json.dumps(c)}" if isinstance(c, dict) else c for c in chunks]
    return sep.join(events + (["data: [DONE]"] if done else [])) + sep


class MockAPI:
    """Answers the page's requests under ORIGIN; `replies` are (status, body) popped per completion request."""

    def __init__(self, page, models=("tiny", "other")):
        self.requests, self.replies = [], []
        self.models = list(models)
        page.route(f"{ORIGIN}/**", self.handle)

    def handle(self, route):
        req = route.request
        path = req.url[len(ORIGIN):]
        if path == "/":
            return route.fulfill(status=200, content_type="text/html; charset=utf-8", body=PAGE.read_text("utf-8"))
        if path == "/v1/models":
            self.requests.append(("models", req.headers, None))
            data = [{"id": m, "object": "model", "owned_by": "kexa"} for m in self.models]
            return route.fulfill(status=200, content_type="application/json", json={"object": "list", "data": data})
        if path == "/v1/chat/completions":
            self.requests.append(("chat", req.headers, json.loads(req.post_data)))
            status, body = self.replies.pop(0)
            if status is None:
                return route.abort("connectionrefused")
            kind = "text/event-stream" if status == 200 else "application/json"
            return route.fulfill(status=status, content_type=kind, body=body)
        route.fulfill(status=404, body="not found")

    def chat_bodies(self):
        return [body for kind, _, body in self.requests if kind == "chat"]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 820}, color_scheme="light")
    page = context.new_page()
    page.problems = []  # console errors (a CSP violation shows up here), dialogs, uncaught exceptions
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
    yield page
    context.close()


def open_mocked(page):
    api = MockAPI(page)
    page.goto(f"{ORIGIN}/")
    expect(page.locator("#model option")).to_have_count(2)
    return api


# ---- rendering ------------------------------------------------------------------------------------------

@needs_chromium
def test_model_output_renders_as_text_never_as_markup(page, tmp_path):
    api = open_mocked(page)
    content = ["Here: <scr", "ipt>window.__pwned = 1</script> and <img src=x onerror=\"window.__pwned = 2\">\n\n",
               "**bold** and `<b>code</b>` and [click](javascript:window.__pwned=3) and "
               "[docs](https://example.com/a?b=<c>)\n",
               "\n```html\n<script>window.__pwned = 4</script>\n```\n"
               "- item <iframe src=\"javascript:1\"></iframe>\n- two\n3. three\n"]
    svg = "<svg onload=\"window.__pwned = 5\"></svg> "
    api.replies.append((200, sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": svg, "reasoning": svg}),
        chunk({"reasoning": "plan"}),  # a server that sends only vLLM's newer field
        *[chunk({"content": c}) for c in content],
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "<b onmouseover=alert(1)>search", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\": \"<script>"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "alert(1)</script>\"}"}}]}, finish="tool_calls"),
        chunk(usage={"prompt_tokens": 9, "completion_tokens": 31, "total_tokens": 40}), sep="\r\n\r\n")))
    say(page, "<i>hi</i> & show me")
    wait_idle(page)

    log = page.locator("#log")
    reply = log.locator(".msg.assistant")
    assert page.evaluate("window.__pwned") is None and page.problems == []
    # nothing from the model became an element other than the subset's own, and no attribute came from it
    tags = page.evaluate("[...document.querySelectorAll('#log *')].map(e => e.tagName.toLowerCase())")
    assert set(tags) <= {"article", "div", "details", "summary", "p", "strong", "code", "a", "pre", "ul", "ol", "li"}
    attrs = page.evaluate("[...document.querySelectorAll('#log *')].flatMap(e => [...e.attributes].map(a => a.name))")
    assert set(attrs) <= {"class", "open", "href", "target", "rel", "data-lang", "start", "role"}
    assert log.locator(".msg.user .text").inner_text() == "<i>hi</i> & show me"
    text = reply.locator(".content").inner_text()
    assert "<script>window.__pwned = 1</script>" in text and "onerror=\"window.__pwned = 2\">" in text
    assert "[click](javascript:window.__pwned=3)" in text  # a javascript: link stays literal text
    assert reply.locator("strong").inner_text() == "bold"
    assert reply.locator("p code").inner_text() == "<b>code</b>"
    link = reply.locator("a")
    assert link.count() == 1 and link.inner_text() == "docs"
    assert link.get_attribute("href") == "https://example.com/a?b=%3Cc%3E" and "noopener" in link.get_attribute("rel")
    assert reply.locator("pre code[data-lang=html]").inner_text() == "<script>window.__pwned = 4</script>"
    assert reply.locator("ul li").all_inner_texts() == ["item <iframe src=\"javascript:1\"></iframe>", "two"]
    assert reply.locator("ol").get_attribute("start") == "3"
    # the reasoning (one copy, though the first delta carried both field names) and the tool call
    assert reply.locator("details.reasoning .text").text_content() == "<svg onload=\"window.__pwned = 5\"></svg> plan"
    call = reply.locator(".tool-call")
    assert call.locator(".label code").inner_text() == "<b onmouseover=alert(1)>search"
    assert json.loads(call.locator("pre").inner_text()) == {"q": "<script>alert(1)</script>"}
    assert reply.locator(".meta").inner_text().startswith("31 tokens")
    for d in screenshot_dirs(tmp_path):
        d.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(d / "chat-markup-as-text.png"))
    assert page.evaluate("window.__pwned") is None and page.problems == []


@needs_chromium
def test_request_reasoning_block_and_conversation_kept(page, tmp_path):
    api = open_mocked(page)
    # every control is reached by its accessible name and role, as a screen reader user would
    page.get_by_label("Model").select_option("other")
    page.get_by_role("switch", name="Thinking").uncheck()
    for label, value in [("Temperature", "0"), ("Top-p", "0.5"), ("Top-k", "5"), ("Max tokens", "7"), ("Seed", "3"),
                         ("System prompt", "Be brief.")]:
        page.get_by_label(label).fill(value)
    page.get_by_label("API key").fill("sk-test")
    page.get_by_label("API key").dispatch_event("change")  # a new key reloads the model list with it
    expect(page.locator("#model")).to_have_value("other")
    api.replies.append((200, sse(chunk({"content": "Four."}, finish="stop"))))
    page.get_by_label("Message").fill("2+2?")
    page.get_by_role("button", name="Send").click()
    wait_idle(page)
    expect(page.get_by_role("log").get_by_role("article")).to_have_count(2)

    body = api.chat_bodies()[0]
    assert body == {"model": "other", "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
                    "chat_template_kwargs": {"enable_thinking": False}, "temperature": 0, "top_p": 0.5, "top_k": 5,
                    "max_tokens": 7, "seed": 3}
    assert {h.get("authorization") for kind, h, _ in api.requests if kind == "chat"} == {"Bearer sk-test"}
    assert api.requests[-2][0] == "models" and api.requests[-2][1].get("authorization") == "Bearer sk-test"
    assert page.locator(".msg.assistant details").count() == 0  # thinking off: no reasoning block

    # thinking on: reasoning streams into a block that collapses when the answer starts and opens on click
    page.check("#thinking")
    page.fill("#seed", "")
    api.replies.append((200, sse(chunk({"reasoning_content": "The user asks for 3+3.\n3+3 = 6."}),
                                 chunk({"content": "**6**"}), chunk({"content": ", of course."}, finish="stop"),
                                 chunk(usage={"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}))))
    say(page, "and 3+3?")
    wait_idle(page)
    second = api.chat_bodies()[1]
    assert second["chat_template_kwargs"] == {"enable_thinking": True} and "seed" not in second
    assert second["messages"][1:] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Four."},
                                      {"role": "user", "content": "and 3+3?"}]  # past reasoning is not sent back
    details = page.locator(".msg.assistant").nth(1).locator("details.reasoning")
    expect(details).not_to_have_attribute("open", "")
    details.locator("summary").click()
    expect(details).to_have_attribute("open", "")
    assert details.locator(".text").inner_text() == "The user asks for 3+3.\n3+3 = 6."
    for d in screenshot_dirs(tmp_path):
        d.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(d / "chat-reasoning.png"))

    # a reload keeps the conversation, the settings and (in this tab) the API key
    page.reload()
    expect(page.locator(".msg")).to_have_count(4)
    assert page.locator(".msg.assistant").nth(1).locator(".content").inner_text() == "6, of course."
    assert page.input_value("#api-key") == "sk-test" and page.input_value("#top_k") == "5"
    expect(page.locator("#model")).to_have_value("other")
    # a damaged saved conversation loses its bad entries, not the page
    page.evaluate("""() => { const s = JSON.parse(localStorage.getItem('kexa-chat/v1'));
        s.conversation.push(null, {role: 'tool', content: 'x'}, {role: 'user', content: 7},
                            {role: 'assistant', content: 'ok'});
        localStorage.setItem('kexa-chat/v1', JSON.stringify(s)); }""")
    page.reload()
    expect(page.locator(".msg")).to_have_count(5)
    assert page.locator(".msg.assistant").nth(2).inner_text().endswith("ok")
    page.click("#new-chat")
    expect(page.locator(".msg")).to_have_count(0)
    assert page.problems == []


@needs_chromium
def test_bad_input_and_server_errors_show_one_line_and_lose_nothing(page):
    api = open_mocked(page)
    page.fill("#tools", "[{\"type\": \"function\",")
    say(page, "keep me")
    expect(page.locator("#status")).to_contain_text("tools is not valid JSON")
    assert page.input_value("#prompt") == "keep me" and api.chat_bodies() == [] and page.locator(".msg").count() == 0
    page.fill("#tools", "{\"type\": \"function\"}")
    say(page, "keep me")
    expect(page.locator("#status")).to_have_text("tools must be a JSON array of tool definitions")
    page.fill("#tools", "")
    page.fill("#seed", "1.5")
    say(page, "keep me")
    expect(page.locator("#status")).to_have_text("seed must be an integer, got \"1.5\"")
    page.fill("#seed", "")

    # the server's error envelope, shown under the turn; the next message still goes out
    error = {"error": {"message": "max_tokens must be at least 1, got 0", "type": "BadRequestError",
                       "param": "max_tokens", "code": 400}}
    api.replies.append((400, json.dumps(error)))
    say(page, "keep me")
    wait_idle(page)
    expect(page.locator("#status")).to_have_text("")
    assert page.locator(".msg.assistant .error").inner_text() == "400: max_tokens must be at least 1, got 0"
    # an error event in the middle of a stream keeps the partial answer; a stream cut short says so
    api.replies.append((200, sse(chunk({"content": "partial"}), {"error": {"message": "engine failed"}})))
    say(page, "again")
    wait_idle(page)
    api.replies.append((200, sse(chunk({"content": "cut"}), done=False)))
    say(page, "and again")
    wait_idle(page)
    api.replies.append((None, None))  # the server is gone
    say(page, "anyone?")
    wait_idle(page)
    replies = page.locator(".msg.assistant")
    assert replies.nth(1).locator(".content").inner_text() == "partial"
    assert replies.nth(1).locator(".error").inner_text() == "engine failed"
    assert replies.nth(2).locator(".error").inner_text() == "the connection closed before the reply finished"
    assert replies.nth(3).locator(".error").inner_text() == "cannot reach the server: Failed to fetch"
    # the failed empty reply is not sent back as history; partial answers are
    assert [m["content"] for m in api.chat_bodies()[-1]["messages"]] == [
        "keep me", "again", "partial", "and again", "cut", "anyone?"]
    assert len(page.problems) == 2 and "status of 400" in page.problems[0]  # Chromium logs the failed fetches
    assert "ERR_CONNECTION_REFUSED" in page.problems[1]


# ---- live: the page in front of `kexa serve` on a tiny model ---------------------------------------------

KEY = "sk-page-test"
TEXT = "the quick brown fox jumps over the lazy dog. 안녕하세요 세계. " * 100


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny model folder with its tokenizer (built as test_infer_cli does)."""
    from kexa.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("tiny_served")
    (d / "corpus.txt").write_text(TEXT + "\n", "utf-8")
    tok = train_bpe([str(d / "corpus.txt")], vocab_size=420)
    return save_tiny_model(tok, d)


@pytest.fixture(scope="module")
def live(tiny_dir, browser):
    """(url, model name) of `kexa serve --api-key KEY` on the tiny model folder; SIGTERM (then kill) after."""
    try:
        with serve(tiny_dir, "--api-key", KEY, "--served-model-name", "tiny-page", timeout_s=60) as (url, name):
            assert name == "tiny-page"
            yield url, name
    except ScreenshotUnavailable as e:  # not ready in 60 s, or exited: its last lines
        pytest.fail(str(e))


def open_live(page, url, name):
    page.goto(f"{url}/")
    expect(page.locator("#status")).to_contain_text("401")  # the page asks the server, which wants a key
    page.fill("#api-key", KEY)
    page.locator("#api-key").dispatch_event("change")
    wait_listed(page, name)


def reply_text(page, i):
    """The first streamed text of the i-th reply: its reasoning, or its answer when thinking is off.
    (Waited on with a locator: wait_for_function evaluates a string in the page, which the page's CSP forbids.)"""
    return page.locator(".msg.assistant").nth(i).locator("details .text, .content").first


def stored_reply(page):
    return stored_conversation(page)[-1]


@needs_chromium
def test_live_reply_streams_and_equals_the_api_with_thinking_off_and_on(live, page, tmp_path):
    from openai import OpenAI

    url, name = live
    client = OpenAI(base_url=f"{url}/v1", api_key=KEY)
    open_live(page, url, name)
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "24")
    # every render of the reply, to see it grow event by event rather than arrive whole
    page.evaluate("""() => { window.renders = [];
        new MutationObserver((records) => { for (const r of records) for (const n of r.addedNodes)
            if (n.classList.contains('assistant'))
                window.renders.push(n.querySelector('.content, details .text')?.textContent ?? ''); })
        .observe(document.getElementById('log'), {childList: true}); }""")
    for thinking in (False, True):
        page.set_checked("#thinking", thinking)
        page.click("#new-chat")
        page.evaluate("window.renders = []")
        say(page, "the quick brown")
        wait_idle(page)
        reply = stored_reply(page)
        res = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "the quick brown"}], temperature=0, max_tokens=24,
            extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
        want = res.choices[0]
        assert "error" not in reply and "stopped" not in reply
        assert reply["content"] == (want.message.content or "")
        assert reply["reasoning"] == (getattr(want.message, "reasoning_content", None) or "")
        assert (reply["reasoning"] != "") == thinking  # a random tiny model never closes its think block
        assert page.locator(".msg.assistant details.reasoning").count() == int(thinking)
        # the same request streamed by the API: how many times its text can visibly grow (the server holds back
        # an incomplete UTF-8 sequence, so byte-token noise may grow in fewer steps than tokens; the model's
        # greedy tokens depend on the machine's thread count)
        stream = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "the quick brown"}], temperature=0, max_tokens=24,
            stream=True, extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
        text, steps = "", []
        for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            piece = (getattr(delta, "reasoning_content", None) if thinking else delta.content) if delta else None
            if piece:
                text += piece
                steps.append(text)
        grown = [t for t in dict.fromkeys(page.evaluate("window.renders")) if t]
        assert len(steps) >= 2 and len(grown) >= min(3, len(steps)), (grown, steps)
        assert all(b.startswith(a) for a, b in zip(grown, grown[1:])), grown
        print(f"thinking={thinking}: {res.usage.completion_tokens} tokens, {len(grown)} renders")
    for d in screenshot_dirs(tmp_path):
        d.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(d / "chat-live-tiny.png"))
    assert page.problems == [] or all("401" in p for p in page.problems)  # only the keyless models request


@needs_chromium
def test_live_stop_aborts_the_stream_and_the_server_frees_the_slot(live, page):
    import httpx

    url, name = live
    open_live(page, url, name)
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "4000")
    say(page, "go on")
    expect(reply_text(page, -1)).to_have_text(re.compile(r"\S"))
    page.get_by_role("button", name="Stop").click()
    wait_idle(page)
    expect(page.locator(".msg.assistant .meta")).to_contain_text("stopped")
    reply = stored_reply(page)
    assert reply["stopped"] and "error" not in reply and (reply["reasoning"] or reply["content"])
    running = None
    for _ in range(50):  # the server notices the closed connection and frees the KV-cache slot
        text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        running = float(re.search(r"^kexa:num_requests_running\{[^}]*\} (\S+)$", text, re.M).group(1))
        if running == 0:
            break
        page.wait_for_timeout(100)
    assert running == 0
    say(page, "and Esc stops too")
    expect(reply_text(page, 1)).to_have_text(re.compile(r"\S"))
    page.press("#prompt", "Escape")
    wait_idle(page)
    expect(page.locator(".msg.assistant").nth(1).locator(".meta")).to_contain_text("stopped")
    # "New chat" in the middle of a reply stops it too and leaves an empty page that still works
    say(page, "again")
    expect(reply_text(page, 2)).to_have_text(re.compile(r"\S"))
    page.click("#new-chat")
    wait_idle(page)
    expect(page.locator(".msg")).to_have_count(0)
    assert page.evaluate("JSON.parse(localStorage.getItem('kexa-chat/v1')).conversation") == []
    assert [p for p in page.problems if "401" not in p] == []


# ---- kexa.serve.screenshot: the page talking to a model, kept as a picture --------------------------------

@needs_chromium
def test_chat_on_page_sends_each_turn_with_its_settings_and_opens_the_reasoning(page):
    api = open_mocked(page)
    steps = "".join(f"\nstep {i}: check the carry again." for i in range(40))  # taller than the viewport
    api.replies.append((200, sse(chunk({"reasoning_content": "47 + 38: 7 + 8 = 15, carry 1; 4 + 3 + 1 = 8." + steps}),
                                 chunk({"content": "**85**"}, finish="stop"),
                                 chunk(usage={"prompt_tokens": 9, "completion_tokens": 21, "total_tokens": 30}))))
    api.replies.append((200, sse(chunk({"content": "안녕하세요!"}, finish="stop"))))
    turns = chat_on_page(page, [("What is 47 + 38?", True), ("한국어로 인사해 주세요.", False)],
                         temperature=0.7, top_p=0.9, max_tokens=64, seed=5, timeout_s=10)

    first, second = api.chat_bodies()
    common = {"model": "tiny", "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.7,
              "top_p": 0.9, "max_tokens": 64, "seed": 5}
    assert first == {**common, "messages": [{"role": "user", "content": "What is 47 + 38?"}],
                     "chat_template_kwargs": {"enable_thinking": True}}
    assert second == {**common, "chat_template_kwargs": {"enable_thinking": False}, "messages": [
        {"role": "user", "content": "What is 47 + 38?"}, {"role": "assistant", "content": "**85**"},
        {"role": "user", "content": "한국어로 인사해 주세요."}]}
    assert turns == [
        {"prompt": "What is 47 + 38?", "thinking": True,
         "reasoning": "47 + 38: 7 + 8 = 15, carry 1; 4 + 3 + 1 = 8." + steps,
         "content": "**85**", "finish_reason": "stop", "completion_tokens": 21, "error": None},
        {"prompt": "한국어로 인사해 주세요.", "thinking": False, "reasoning": "", "content": "안녕하세요!",
         "finish_reason": "stop", "completion_tokens": None, "error": None}]
    # the page folded the reasoning when the answer began; the picture shows it open
    details = page.locator(".msg.assistant").nth(0).locator("details.reasoning")
    expect(details).to_have_attribute("open", "")
    assert page.locator(".msg.assistant").nth(1).locator("details").count() == 0
    # the page is 100vh with a scrolling log: the picture's viewport grows until the whole conversation shows
    scroll = "[document.getElementById('log').scrollHeight, document.getElementById('log').clientHeight]"
    assert page.evaluate(scroll)[0] > page.evaluate(scroll)[1]
    height = screenshot.fit_log(page)
    assert 820 < height < screenshot.MAX_HEIGHT and page.viewport_size == {"width": 1200, "height": height}
    assert page.evaluate(scroll)[0] == page.evaluate(scroll)[1]
    assert screenshot.fit_log(page, max_height=900) == 900  # capped
    # a setting the page refuses leaves the message unsent: one reason, not a misaligned result
    with pytest.raises(ScreenshotUnavailable, match=r"sent 0 of 1 turns: seed must be an integer, got \"1.5\""):
        chat_on_page(page, [("again", False)], seed=1.5, timeout_s=10)
    assert page.problems == []


def png_size(path):
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", head
    return struct.unpack(">II", head[16:24])  # (width, height)


@needs_chromium
def test_chat_screenshot_keeps_a_png_and_what_the_api_answers(tiny_dir, live, tmp_path):
    from openai import OpenAI

    out = tmp_path / "shot" / "chat.png"
    result = chat_screenshot(tiny_dir, out, turns=[("the quick brown", False), ("안녕하세요 세계", True)],
                             temperature=0, top_p=0.95, max_tokens=24, seed=0, timeout_s=120)
    assert result["png"] == str(out) and 0 < result["seconds"] < 120
    width, height = png_size(out)
    assert width == screenshot.WIDTH and screenshot.HEIGHT <= height <= screenshot.MAX_HEIGHT
    assert 10_000 < out.stat().st_size < 5_000_000  # a rendered page, not an empty image
    # the same requests through the openai client (on the `live` server of the same folder) give the same
    # replies; the page sends the history as it does (user turns and non-empty answers, no past reasoning)
    url, name = live
    client = OpenAI(base_url=f"{url}/v1", api_key=KEY)
    messages = []
    assert [(t["prompt"], t["thinking"]) for t in result["turns"]] == [("the quick brown", False),
                                                                       ("안녕하세요 세계", True)]
    for turn in result["turns"]:
        messages.append({"role": "user", "content": turn["prompt"]})
        res = client.chat.completions.create(
            model=name, messages=messages, temperature=0, top_p=0.95, max_tokens=24, seed=0,
            extra_body={"chat_template_kwargs": {"enable_thinking": turn["thinking"]}})
        want = res.choices[0]
        assert turn["error"] is None and turn["finish_reason"] == want.finish_reason
        assert turn["content"] == (want.message.content or "")
        assert turn["reasoning"] == (getattr(want.message, "reasoning_content", None) or "")
        assert (turn["reasoning"] != "") == turn["thinking"]  # a random tiny model never closes its think block
        assert turn["completion_tokens"] == res.usage.completion_tokens
        if turn["content"]:
            messages.append({"role": "assistant", "content": turn["content"]})
    assert len(messages) == 3  # the first answer went back as history
    for d in screenshot_dirs(tmp_path)[1:]:
        d.mkdir(parents=True, exist_ok=True)
        (d / "chat-screenshot-tiny.png").write_bytes(out.read_bytes())


def test_a_missing_browser_is_one_reason_and_nothing_starts(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(screenshot.shutil, "which", lambda name: None)
    with pytest.raises(ScreenshotUnavailable, match=r"^no `chromium` on PATH \(apt-get install chromium"):
        chat_screenshot(tmp_path / "no-model", tmp_path / "chat.png")  # raised before a server would fail on it
    assert not (tmp_path / "chat.png").exists()
    # the command line: one line on stderr, exit code 1; --no-thinking applies to the --prompt before it
    assert screenshot.main(["--model", str(tmp_path), "--out", str(tmp_path / "chat.png")]) == 1
    assert capsys.readouterr().err.startswith("kexa screenshot: unavailable: no `chromium` on PATH")
    args = screenshot._parser().parse_args(["--model", "m", "--out", "o.png", "--prompt", "a", "--no-thinking",
                                            "--prompt", "b", "--prompt", "c", "--no-thinking", "--thinking"])
    assert args.turns == [["a", False], ["b", True], ["c", True]]
    with pytest.raises(SystemExit):
        screenshot._parser().parse_args(["--model", "m", "--out", "o.png", "--no-thinking", "--prompt", "a"])
    assert "give a --prompt first" in capsys.readouterr().err


def test_hangul_without_a_korean_font_is_a_warning(monkeypatch):
    import subprocess

    fonts = {"stdout": ""}
    monkeypatch.setattr(screenshot.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0, stdout=fonts["stdout"] if cmd[:2] == ["fc-list", ":lang=ko"] else None))
    monkeypatch.setattr(screenshot.shutil, "which", lambda name: "/usr/bin/" + name)
    korean = [{"prompt": "인사해 주세요", "reasoning": "", "content": "hi"}]
    assert "apt-get install fonts-nanum" in screenshot._missing_font_warning(korean)[0]
    assert screenshot._missing_font_warning([{"prompt": "hi", "reasoning": "", "content": "hello"}]) == []
    fonts["stdout"] = "NanumGothic\n"
    assert screenshot._missing_font_warning(korean) == []


@needs_chromium
def test_a_server_that_cannot_start_is_one_reason_with_its_last_words(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScreenshotUnavailable, match=r"^kexa serve exited with code 2 before it was ready: "
                                                    r".*kexa serve: error: .*empty"):
        chat_screenshot(tmp_path / "empty", tmp_path / "chat.png", timeout_s=60)
    assert not (tmp_path / "chat.png").exists()
