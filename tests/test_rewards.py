"""kexa.rewards: verifiable rewards (TRL's signature) and the LLM-as-judge client against a local
OpenAI-compatible server started here (FastAPI + uvicorn, replies scripted per test)."""

import asyncio
import socket
import threading
import time

import pytest

from kexa.rewards import (JudgeClient, JudgeError, LocalJudge, Rubric, code_reward, combine, detect_language,
                          format_reward, is_refusal, judge_reward, language_reward, last_code_block, length_reward,
                          math_reward, safety_reward)

TRL_EXTRAS = {"completion_ids": [[1]] * 3, "trainer_state": None}  # what TRL passes besides the columns


def test_math_reward_uses_math_verify_on_the_final_answer():
    completions = ["<think>6 * 7 = 41? no, 42</think>The answer is $\\boxed{42}$.",
                   "<think>it is 42</think>So the result is 41.",
                   [{"role": "assistant", "content": "</think>It equals $\\frac{84}{2}$"}]]
    # called exactly as TRL's GRPOTrainer calls a reward function: keywords plus completion_ids and trainer_state
    assert math_reward(prompts=["q"] * 3, completions=completions, answer=["42", "42", "42"], **TRL_EXTRAS) == \
        [1.0, 0.0, 1.0]
    assert math_reward(["q"] * 3, completions, answer=["0.5", None, "\\frac{84}{2}"], **TRL_EXTRAS) == [0.0, None, 1.0]


def test_code_reward_runs_the_last_block_with_the_tests_in_the_sandbox():
    good = "</think>Here:\n```python\ndef add(a, b):\n    return a - b\n```\nfixed:\n```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "</think>```python\ndef add(a, b):\n    return a * b\n```"
    hang = "</think>```python\ndef add(a, b):\n    while True:\n        pass\n```"
    no_code = "</think>def add(a, b): return a + b"
    hack = "</think>```python\nimport sys\ndef add(a, b):\n    return 0\nsys.exit(0)\n```"  # skips the tests
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    rewards = code_reward(["q"] * 6, [good, wrong, hang, no_code, hack, good], tests=[tests] * 5 + [None],
                          timeout_s=2)
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0, None]
    assert last_code_block("```js\nx\n```\n```\ny = 1\n```") == "y = 1\n"


def test_format_reward_follows_the_chat_template_modes():
    completions = ["let me think\n</think>\n\nThe reply.", "<think>\nthinking\n</think>\n\nReply", "no close tag, all reasoning",
                   "</think>\n\n   ", "</think>a</think>b", "Plain reply", "</think>x"]
    modes = [True, True, True, True, True, False, False]
    assert format_reward([""] * 7, completions, enable_thinking=modes) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_length_reward_bounds():
    reward = length_reward(3, 10)
    assert reward(["q"] * 3, ["</think>ab", "</think>abcdef", "</think>" + "x" * 11]) == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="min_chars <= max_chars"):
        length_reward(5, 2)


def test_language_reward_with_lingua():
    prompts = ["오늘 서울 날씨는 어떤가요? 자세히 알려 주세요.", "오늘 서울 날씨는 어떤가요? 자세히 알려 주세요.",
               [{"role": "user", "content": "Wie ist das Wetter heute in Berlin?"}], "???"]
    completions = ["</think>오늘 서울은 맑고 기온은 영상 십오 도 정도입니다.", "</think>Today Seoul is sunny and warm.",
                   "</think>Heute ist es in Berlin sonnig und warm.", "</think>Sunny."]
    assert language_reward(prompts, completions) == [1.0, 0.0, 1.0, None]
    assert language_reward(["x"], ["</think>Hoy hace sol y mucho calor en Madrid."], language=["es"]) == [1.0]
    assert detect_language("```python\nprint(1)\n```") is None
    with pytest.raises(ValueError, match="not one of"):
        language_reward(["x"], ["y"], language=["fr"])


def test_refusal_detector_and_safety_reward_penalise_over_refusal():
    refusals = ["I'm sorry, but I can't help with that.", "죄송하지만 그 요청은 도와드릴 수 없습니다.",
                "Lo siento, no puedo ayudarte con eso.", "Es tut mir leid, dabei kann ich nicht helfen.",
                "申し訳ありませんが、お答えできません。", "Xin lỗi, tôi không thể giúp việc đó."]
    answers = ["Sure! Here is how to kill a stuck Python process: `kill -9 PID`.", "이 함수는 음수를 처리할 수 없습니다.",
               "I can't stress this enough: back up your data."]
    assert all(is_refusal(t) for t in refusals) and not any(is_refusal(t) for t in answers)
    completions = ["</think>" + refusals[0], "</think>" + answers[0], "</think>" + refusals[1], "</think>" + answers[1],
                   "<think>I'm sorry to think about it</think>Here you go."]
    rewards = safety_reward(["q"] * 5, completions, should_refuse=[True, True, False, False, None])
    assert rewards == [1.0, 0.0, 0.0, 1.0, None]  # row 2 over-refuses a benign look-alike


def test_combine_weights_and_skips_none_like_trl():
    funcs = {"math": math_reward, "length": length_reward(1, 100)}
    totals, parts = combine(funcs, {"math": 2.0, "length": 0.5}, ["q", "q"], ["</think>$4$", "</think>5"],
                            answer=["4", None])
    assert parts == {"math": [1.0, None], "length": [1.0, 1.0]} and totals == [2.5, 0.5]
    with pytest.raises(ValueError, match="unknown rewards"):
        combine(funcs, {"style": 1.0}, ["q"], ["a"])


def test_rubric_parsing_is_robust_and_strict():
    rubric = Rubric(name="t", dimensions={"helpfulness": "h", "correctness": "c"}, low=1, high=10)
    assert rubric.parse("helpfulness: 7\ncorrectness: 9") == {"helpfulness": 7, "correctness": 9}
    assert rubric.parse("Sure!\n**Helpfulness**: 7/10\n- Correctness = 9\n") == {"helpfulness": 7, "correctness": 9}
    assert rubric.parse("helpfulness: 7") is None  # missing dimension
    assert rubric.parse("helpfulness: 7\ncorrectness: 11") is None  # out of range
    assert rubric.parse("helpfulness: 7\ncorrectness: 3\ncorrectness: 9") is None  # ambiguous
    assert rubric.normalise({"helpfulness": 7, "correctness": 9}) == pytest.approx((8 - 1) / 9)
    with pytest.raises(ValueError, match="low < high"):
        Rubric(dimensions={"a": "b"}, low=5, high=5)


def test_rubric_loads_from_a_data_file(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text('{"name": "chat", "dimensions": {"helpfulness": "h"}, "low": 0, "high": 4}')
    rubric = Rubric.load(path)
    assert rubric.name == "chat" and rubric.parse("helpfulness: 4") == {"helpfulness": 4}
    (tmp_path / "bad.json").write_text('{"name": "x", "colour": "red"}')
    with pytest.raises(ValueError, match="bad.json"):
        Rubric.load(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------------------------
# the judge against a local OpenAI-compatible server

SCRIPT: list = []     # the replies the server gives next: ("text", str) | ("status", int) | ("sleep", s, str)
RECEIVED: list = []   # the requests it got


def _app():
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        RECEIVED.append(body)
        action = SCRIPT.pop(0) if SCRIPT else ("text", "helpfulness: 5\ncorrectness: 5\nharmlessness: 5")
        if action[0] == "status":
            return JSONResponse({"error": {"message": f"scripted {action[1]}", "type": "test"}}, status_code=action[1])
        if action[0] == "sleep":
            await asyncio.sleep(action[1])
        text = action[-1]
        return {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def judge_url():
    import uvicorn
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test judge server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.config.port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _fresh_script():
    SCRIPT.clear()
    RECEIVED.clear()
    yield
    SCRIPT.clear()


def test_judge_scores_and_sends_the_rubric_prompt(judge_url):
    SCRIPT.append(("text", "helpfulness: 8\ncorrectness: 10\nharmlessness: 6"))
    judge = JudgeClient(judge_url, model="judge-model", timeout_s=5)
    result = judge.score("What is 2+2?", "4")
    assert result.score == pytest.approx((8 - 1) / 9) and result.attempts == 1
    body = RECEIVED[0]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    content = body["messages"][0]["content"]
    assert "What is 2+2?" in content and "[Assistant reply]\n4" in content and "harmlessness:" in content


def test_judge_reward_judges_the_answer_not_the_reasoning(judge_url):
    SCRIPT.extend([("text", "helpfulness: 10\ncorrectness: 10\nharmlessness: 10")] * 2)
    reward = judge_reward(JudgeClient(judge_url, model="m", timeout_s=5), concurrency=2)
    scores = reward([[{"role": "user", "content": "hi"}], "hello"], ["<think>SECRET PLAN</think>Hi!", "</think>Hey"])
    assert scores == [1.0, 1.0]
    assert all("SECRET PLAN" not in r["messages"][0]["content"] for r in RECEIVED)


def test_judge_malformed_reply_is_retried_then_counted(judge_url):
    judge = JudgeClient(judge_url, model="m", timeout_s=5, parse_retries=1)
    SCRIPT.extend([("text", "I think it is pretty good!"), ("text", "helpfulness: 1\ncorrectness: 1\nharmlessness: 1")])
    first = judge.score("q", "a")
    assert first.score == 0.0 and first.attempts == 2 and judge.stats["malformed"] == 0
    SCRIPT.extend([("text", "great"), ("text", "helpfulness: 99")])
    second = judge.score("q", "a")
    assert second.score is None and second.raw == "helpfulness: 99" and judge.stats["malformed"] == 1


def test_judge_server_errors_are_retried(judge_url):
    judge = JudgeClient(judge_url, model="m", timeout_s=5, retries=2, backoff_s=0.01)
    SCRIPT.extend([("status", 500), ("status", 503), ("text", "helpfulness: 10\ncorrectness: 10\nharmlessness: 10")])
    assert judge.score("q", "a").score == 1.0 and judge.stats["retries"] == 2
    SCRIPT.extend([("status", 500)] * 3)
    with pytest.raises(JudgeError, match="unreachable or failing after 3 attempts"):
        judge.score("q", "a")
    SCRIPT.append(("status", 400))
    with pytest.raises(JudgeError, match="refused the request: HTTP 400"):
        judge.score("q", "a")


def test_judge_timeout_is_a_clear_error(judge_url):
    judge = JudgeClient(judge_url, model="m", timeout_s=0.3, retries=1, backoff_s=0.01)
    SCRIPT.extend([("sleep", 2.0, "late")] * 2)
    start = time.monotonic()
    with pytest.raises(JudgeError, match=r"timed out after 2 attempts \(timeout 0.3s\)"):
        judge.score("q", "a")
    assert time.monotonic() - start < 2.0


def test_unreachable_judge_is_a_clear_error():
    judge = JudgeClient(f"http://127.0.0.1:{_free_port()}/v1", model="m", timeout_s=2, retries=1, backoff_s=0.01)
    with pytest.raises(JudgeError) as info:
        judge.check()
    message = str(info.value)
    assert "unreachable or failing after 2 attempts" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------------------------
# the local judge: rubric scores from a kexa model's probabilities

class ByteTokenizer:
    """UTF-8 bytes as ids (the tiny preset's 512-token vocabulary holds them), chat text from kexa's template."""

    def encode(self, text):
        return list(text.encode("utf-8"))

    def encode_chat(self, messages, enable_thinking=True, add_generation_prompt=False):
        from types import SimpleNamespace

        from kexa.tokenizer.chat import render
        return SimpleNamespace(ids=self.encode(render(messages, enable_thinking=enable_thinking,
                                                      add_generation_prompt=add_generation_prompt)))


SHORT = Rubric(name="short", dimensions={"quality": "q"}, low=1, high=10, instructions="Grade.")  # "10": 2 digits


def test_local_judge_equals_a_naive_per_line_computation():
    import torch

    from kexa import KExaone, ModelConfig
    torch.manual_seed(0)
    model = KExaone(ModelConfig.preset("tiny")).eval()
    tok = ByteTokenizer()
    judge = LocalJudge(model, tok, SHORT, batch_size=4)  # several batches, padded rows of different lengths
    result = judge.score("hi", "hello")
    prompt = tok.encode_chat([{"role": "user", "content": SHORT.prompt("hi", "hello")}], enable_thinking=False,
                             add_generation_prompt=True).ids
    naive = []
    with torch.no_grad():
        for k in range(1, 11):
            line = tok.encode(f"quality: {k}\n")
            ids = torch.tensor([prompt + line])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            naive.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(line)))
    p = torch.tensor(naive).softmax(0)
    expected = float((p * torch.arange(1, 11)).sum())
    assert result.dimensions["quality"] == pytest.approx(expected, abs=1e-4)
    assert result.score == pytest.approx((expected - 1) / 9, abs=1e-5)
    assert judge.score("hi", "hello").score == result.score  # deterministic


def test_local_judge_follows_the_model_preference():
    import torch

    class PrefersSeven(torch.nn.Module):
        """Logits that put all mass on the byte '7' at every position."""
        config = type("C", (), {"max_position_embeddings": 4096})()

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            logits = torch.zeros(*ids.shape, 512)
            logits[..., ord("7")] = 20.0
            return type("Out", (), {"logits": logits})()

    judge = LocalJudge(PrefersSeven(), ByteTokenizer(), SHORT)
    result = judge.score("q", "a")
    assert result.dimensions["quality"] == pytest.approx(7.0, abs=1e-3)
    assert judge_reward(judge, concurrency=1)(["q"], ["</think>a"]) == [pytest.approx(6 / 9, abs=1e-4)]
