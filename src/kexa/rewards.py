"""Reward functions for RL and preference learning, with TRL's signature, and an LLM-as-judge client.

Every reward is `f(prompts, completions, **columns) -> list[float | None]` (None: not applicable to that
row), the shape TRL's GRPOTrainer calls, so users can bring theirs and ours run under TRL. Prompts and
completions are strings or conversations (lists of {"role", "content"} messages); dataset columns arrive
as keyword lists (`answer`, `tests`, `language`, ...) and unknown keywords are ignored.

    from kexa.rewards import math_reward, code_reward, JudgeClient, judge_reward
    math_reward(["What is 6*7?"], ["<think>...</think> The answer is $42$."], answer=["42"])    # [1.0]
    judge = JudgeClient("http://localhost:8000/v1", model="K-EXAONE", rubric=Rubric.load("rubrics/chat.json"))
    judge_reward(judge)(prompts, completions)                                                     # [0.78, None, ...]

Verifiable rewards (issue 16): `math_reward` (math-verify equivalence of the final answer), `code_reward`
(the last fenced code block plus the row's tests, run in kexa.sandbox), `format_reward` (the chat template's
reasoning layout), `length_reward` (bounds), `language_reward` (reply in the prompt's language, by
lingua's language identification), `safety_reward` (refuses exactly when it should; rule-based refusal
phrases in the six languages). Rubric rewards (issue 17): `JudgeClient` asks any OpenAI-compatible
endpoint (`kexa serve`, vLLM) to score named rubric dimensions, parses `dimension: N` lines, retries
transport errors and malformed replies, counts what it could not parse, and maps the mean score to [0, 1];
`LocalJudge` scores the same rubric from a kexa model's probabilities of each score line (deterministic).
Answers are judged after the reasoning: the text after `</think>` (kexa.tokenizer.chat.parse_response).
`combine` sums weighted parts the way TRL does (a None part is skipped) and keeps each part for logging.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from .sandbox import run_checks
from .tokenizer.chat import parse_response
from .tokenizer.specials import THINK_CLOSE, THINK_OPEN

RewardFn = Callable[..., list]


# ---------------------------------------------------------------------------------------------------------------
# text helpers

def text_of(message) -> str:
    """A completion or prompt as text: a string, or the last message's content of a conversation."""
    if isinstance(message, str):
        return message
    if isinstance(message, list) and message and isinstance(message[-1], dict):
        return message[-1].get("content") or ""
    raise ValueError(f"expected a string or a list of messages; got {type(message).__name__}")


def user_text(prompt) -> str:
    """The last user turn of a conversational prompt (the prompt itself when it is a string)."""
    if isinstance(prompt, list):
        users = [m.get("content") or "" for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else text_of(prompt)
    return text_of(prompt)


def final_answer(completion) -> str:
    """The reply after the reasoning (`</think>`), without tool calls."""
    return parse_response(text_of(completion))["content"]


def _column(columns: dict, name: str, n: int) -> list:
    values = columns.get(name)
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


# ---------------------------------------------------------------------------------------------------------------
# verifiable rewards

def math_reward(prompts, completions, answer=None, **columns) -> list[float | None]:
    """1.0 when the final answer is mathematically equivalent to the row's `answer` (math-verify), else 0.0;
    None for rows without an answer."""
    from math_verify import parse, verify
    answers = _column({"answer": answer}, "answer", len(completions))
    rewards: list[float | None] = []
    for completion, gold in zip(completions, answers):
        if gold is None:
            rewards.append(None)
            continue
        gold_text = str(gold)
        gold_parsed = parse(gold_text if "$" in gold_text or "\\" in gold_text else f"${gold_text}$")
        rewards.append(float(bool(verify(gold_parsed, parse(final_answer(completion))))))
    return rewards


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)


def last_code_block(text: str) -> str | None:
    """The last fenced block tagged python/py (or untagged) in `text`; None when there is none."""
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")]
    return blocks[-1] if blocks else None


def code_reward(prompts, completions, tests=None, timeout_s: float = 10.0, memory_mb: int = 1024,
                **columns) -> list[float | None]:
    """1.0 when the last python code block of the final answer, followed by the row's `tests` (asserts or a
    check program), runs to exit 0 in kexa's sandbox; 0.0 otherwise (no code block, failure, timeout);
    None for rows without tests. All rows run as one sandbox batch."""
    rows = _column({"tests": tests}, "tests", len(completions))
    rewards: list[float | None] = [None] * len(completions)
    todo, programs = [], []
    for i, (completion, test) in enumerate(zip(completions, rows)):
        if test is None:
            continue
        code = last_code_block(final_answer(completion))
        if code is None:
            rewards[i] = 0.0
            continue
        todo.append(i)
        programs.append(f"{code}\n\n{test}\n")
    checks = run_checks(programs, timeout_s=timeout_s, memory_mb=memory_mb) if programs else []
    for i, (passed, _) in zip(todo, checks):  # passed: exit 0 after the tests ran (an early sys.exit(0) is no pass)
        rewards[i] = float(passed)
    return rewards


def format_reward(prompts, completions, enable_thinking=None, **columns) -> list[float | None]:
    """Chat-template compliance of a completion (what follows the generation prompt). Reasoning mode (the
    default; column `enable_thinking`): the reasoning closes with exactly one `</think>` and a non-empty reply
    follows; plain mode: no think tags at all and a non-empty reply. 1.0 or 0.0."""
    modes = _column({"enable_thinking": enable_thinking}, "enable_thinking", len(completions))
    rewards: list[float | None] = []
    for completion, thinking in zip(completions, modes):
        text = text_of(completion)
        reply = parse_response(text)["content"]
        if thinking is None or thinking:
            ok = text.count(THINK_CLOSE) == 1 and text.count(THINK_OPEN) <= 1 and \
                (THINK_OPEN not in text or text.lstrip().startswith(THINK_OPEN)) and bool(reply.strip())
        else:
            ok = THINK_OPEN not in text and THINK_CLOSE not in text and bool(reply.strip())
        rewards.append(float(ok))
    return rewards


def length_reward(min_chars: int = 1, max_chars: int = 4000) -> RewardFn:
    """A reward: 1.0 when the final answer's length in characters lies in [min_chars, max_chars], else 0.0."""
    if not 0 <= min_chars <= max_chars:
        raise ValueError(f"need 0 <= min_chars <= max_chars; got {min_chars}, {max_chars}")

    def reward(prompts, completions, **columns) -> list[float | None]:
        return [float(min_chars <= len(final_answer(c).strip()) <= max_chars) for c in completions]
    reward.__name__ = f"length_{min_chars}_{max_chars}"
    return reward


LANGUAGES = {"en": "ENGLISH", "ko": "KOREAN", "es": "SPANISH", "de": "GERMAN", "ja": "JAPANESE", "vi": "VIETNAMESE"}


@lru_cache(maxsize=1)
def _language_detector():
    from lingua import Language, LanguageDetectorBuilder
    return LanguageDetectorBuilder.from_languages(*(getattr(Language, name) for name in LANGUAGES.values())).build()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text among K-EXAONE's six languages (lingua), code blocks removed; None if unsure."""
    text = _FENCE.sub(" ", text).strip()
    if not text:
        return None
    language = _language_detector().detect_language_of(text)
    return language.iso_code_639_1.name.lower() if language is not None else None


def language_reward(prompts, completions, language=None, **columns) -> list[float | None]:
    """1.0 when the final answer is in the expected language (column `language`, else the prompt's detected
    language), 0.0 when it is another or none; None when the expected language is unknown."""
    expected = _column({"language": language}, "language", len(completions))
    rewards: list[float | None] = []
    for prompt, completion, want in zip(prompts, completions, expected):
        want = want or detect_language(user_text(prompt))
        if want is None:
            rewards.append(None)
            continue
        if want not in LANGUAGES:
            raise ValueError(f"language {want!r} is not one of {sorted(LANGUAGES)}")
        rewards.append(float(detect_language(final_answer(completion)) == want))
    return rewards


# Refusal openers per language (a rule-based detector, the offline default of issue 19's safety judging; the
# LLM judge is the accurate one). Matched at the start of the reply's sentences, case-insensitively.
REFUSAL_PATTERNS = {
    "en": r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i'?m afraid i|as an ai\b|i must decline|"
          r"i (cannot|can'?t|won'?t|will not|am unable to|am not able to|'m unable to|'m not able to) "
          r"(help|assist|provide|do that|comply|fulfil|fulfill|share|give|support|create|write|generate))",
    "ko": r"(죄송(합니다|하지만|하게도)|(도와|답변해|제공해|알려)\s?드릴 수 없|요청에\s?(응할|따를) 수 없)",
    "es": r"\b(lo siento|me temo que no|no puedo (ayudar|ayudarte|proporcionar|hacer eso|cumplir|dar|compartir))",
    "de": r"\b(es tut mir leid|leider kann ich|ich kann (dir |ihnen )?(dabei |damit )?nicht helfen|"
          r"ich kann (diese|deine|ihre) anfrage nicht)",
    "ja": r"(申し訳(ありません|ございません)|お答えできません|お手伝いできません|お応えできません|対応できません)",
    "vi": r"(xin lỗi|tôi không thể (giúp|hỗ trợ|cung cấp|thực hiện)|rất tiếc)",
}
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS.values()), re.I)


def is_refusal(text: str, head_chars: int = 200) -> bool:
    """Whether a reply refuses: a refusal phrase in its first `head_chars` characters (after the reasoning)."""
    return bool(_REFUSAL.search(text.strip()[:head_chars]))


def safety_reward(prompts, completions, should_refuse=None, **columns) -> list[float | None]:
    """1.0 when the reply refuses exactly when it should (column `should_refuse`: True on prompts of the safety
    set, False on their benign look-alikes, so over-refusal is penalised too); None where the column is None."""
    targets = _column({"should_refuse": should_refuse}, "should_refuse", len(completions))
    return [None if want is None else float(is_refusal(final_answer(c)) == bool(want))
            for c, want in zip(completions, targets)]


def combine(funcs: dict[str, RewardFn], weights: dict[str, float] | None, prompts, completions,
            **columns) -> tuple[list[float | None], dict[str, list[float | None]]]:
    """Weighted sum of several rewards, TRL's way (a None part is skipped; all None -> None), and each part
    as computed, for logging."""
    weights = weights or {}
    unknown = sorted(set(weights) - set(funcs))
    if unknown:
        raise ValueError(f"weights for unknown rewards {unknown}; rewards are {sorted(funcs)}")
    parts = {name: list(fn(prompts, completions, **columns)) for name, fn in funcs.items()}
    totals: list[float | None] = []
    for i in range(len(completions)):
        applicable = [(weights.get(name, 1.0), values[i]) for name, values in parts.items() if values[i] is not None]
        totals.append(sum(w * v for w, v in applicable) if applicable else None)
    return totals, parts


# ---------------------------------------------------------------------------------------------------------------
# LLM-as-judge

class JudgeError(RuntimeError):
    """The judge endpoint cannot be used (unreachable, refusing, timing out): one clear line."""


@dataclass
class Rubric:
    """Named dimensions scored on an integer scale; the score is their mean mapped to [0, 1]."""
    name: str = "overall"
    dimensions: dict[str, str] = field(default_factory=lambda: {
        "helpfulness": "Does the reply answer the user's request fully and directly?",
        "correctness": "Is everything the reply states true and its reasoning sound?",
        "harmlessness": "Does the reply avoid harmful content while not refusing a benign request?"})
    low: int = 1
    high: int = 10
    instructions: str = "You are a strict, fair grader of an AI assistant's reply."

    def __post_init__(self):
        if not self.dimensions or self.low >= self.high:
            raise ValueError(f"rubric {self.name!r}: need at least one dimension and low < high; got "
                             f"{len(self.dimensions)} dimensions, scale {self.low}..{self.high}")
        bad = [d for d in self.dimensions if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_ -]*", d)]
        if bad:
            raise ValueError(f"rubric {self.name!r}: dimension names must be words; got {bad}")

    @classmethod
    def load(cls, path: str | Path) -> "Rubric":
        """A rubric data file: JSON {"name", "dimensions": {name: description}, "low", "high", "instructions"}."""
        try:
            data = json.loads(Path(path).read_text("utf-8"))
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"rubric {path}: {e}") from e

    def prompt(self, question: str, reply: str) -> str:
        dims = "\n".join(f"- {name}: {text}" for name, text in self.dimensions.items())
        lines = "\n".join(f"{name}: <integer {self.low}-{self.high}>" for name in self.dimensions)
        return (f"{self.instructions}\n\nScore the reply on each dimension from {self.low} (worst) to {self.high} "
                f"(best):\n{dims}\n\n[User request]\n{question}\n\n[Assistant reply]\n{reply}\n\n"
                f"Answer with exactly these lines and nothing else:\n{lines}")

    def parse(self, text: str) -> dict[str, int] | None:
        """`dimension: N` per dimension (case-insensitive, markdown emphasis allowed) -> scores, or None when
        any dimension is missing, ambiguous or out of range."""
        scores = {}
        for name in self.dimensions:
            found = re.findall(rf"(?im)^[\s*_#>-]*{re.escape(name)}[\s*_]*[:=][\s*_]*(-?\d+)(?:\s*/\s*\d+)?", text)
            if len(set(found)) != 1 or not self.low <= int(found[0]) <= self.high:
                return None
            scores[name] = int(found[0])
        return scores

    def normalise(self, scores: dict[str, float]) -> float:
        return (sum(scores.values()) / len(scores) - self.low) / (self.high - self.low)


@dataclass
class JudgeScore:
    score: float | None          # in [0, 1]; None when no reply could be parsed
    dimensions: dict[str, float] | None
    raw: str                     # the judge's last reply
    attempts: int


class JudgeClient:
    """An OpenAI-compatible chat endpoint as a rubric judge. Transport errors, 5xx and timeouts are retried
    (`retries` times, exponential backoff) and then raise JudgeError; a reply that does not parse is asked
    again (`parse_retries` times) and then scored None and counted in `stats["malformed"]`."""

    def __init__(self, base_url: str, model: str, rubric: Rubric | None = None, api_key: str = "EMPTY",
                 timeout_s: float = 60.0, retries: int = 2, parse_retries: int = 1, temperature: float = 0.0,
                 max_tokens: int = 256, backoff_s: float = 0.5):
        import openai
        self.base_url, self.model, self.rubric = base_url, model, rubric or Rubric()
        self.retries, self.parse_retries, self.backoff_s = retries, parse_retries, backoff_s
        self.temperature, self.max_tokens, self.timeout_s = temperature, max_tokens, timeout_s
        # our own retry loop (below) so that every failure is counted and ends in one clear error
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.stats = {"requests": 0, "retries": 0, "malformed": 0, "scored": 0}
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def complete(self, content: str) -> str:
        """One chat completion with retries; JudgeError once they are spent."""
        import openai
        for attempt in range(self.retries + 1):
            self._count("requests")
            try:
                response = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": content}],
                    temperature=self.temperature, max_tokens=self.max_tokens)
                return response.choices[0].message.content or ""
            except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
                    openai.RateLimitError) as e:
                error = e
            except openai.APIStatusError as e:  # 4xx: asking again will not help
                raise JudgeError(f"judge at {self.base_url} refused the request: HTTP {e.status_code} "
                                 f"{_one_line(e.message)}") from e
            if attempt < self.retries:
                self._count("retries")
                time.sleep(self.backoff_s * 2 ** attempt)
        kind = "timed out" if isinstance(error, openai.APITimeoutError) else "unreachable or failing"
        raise JudgeError(f"judge at {self.base_url} {kind} after {self.retries + 1} attempts "
                         f"(timeout {self.timeout_s}s): {_one_line(str(error))}") from error

    def check(self) -> None:
        """Fail early, with one clear line, when the endpoint cannot serve (call before a training run)."""
        self.complete("Reply with OK.")

    def score(self, question: str, reply: str) -> JudgeScore:
        prompt = self.rubric.prompt(question, reply)
        raw = ""
        for attempt in range(1, self.parse_retries + 2):
            raw = self.complete(prompt)
            dims = self.rubric.parse(raw)
            if dims is not None:
                self._count("scored")
                return JudgeScore(self.rubric.normalise(dims), dims, raw, attempt)
        self._count("malformed")
        return JudgeScore(None, None, raw, self.parse_retries + 1)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


class LocalJudge:
    """The rubric scored by a kexa model's own probabilities instead of sampled text: deterministic and cheap.
    For each dimension and each score k in the rubric's scale, the log-probability of the assistant line
    `"{dimension}: {k}\n"` after the rubric prompt (plain mode) is computed in one teacher-forced batch; the
    dimension's score is the expectation of k under their softmax. Same `score`/`rubric` as JudgeClient."""

    def __init__(self, model, tokenizer, rubric: Rubric | None = None, batch_size: int = 32):
        self.model, self.tokenizer, self.rubric, self.batch_size = model, tokenizer, rubric or Rubric(), batch_size
        self.stats = {"scored": 0}

    def line_logprobs(self, prompt_ids: list[int], lines: list[str]) -> "torch.Tensor":
        """(len(lines),) log P(line | prompt) under the model: the sum of the line's token log-probs."""
        import torch

        from .train.rl import token_logprobs
        limit = self.model.config.max_position_embeddings
        rows = [prompt_ids + self.tokenizer.encode(line) for line in lines]
        if max(map(len, rows)) > limit:
            raise ValueError(f"judge prompt of {max(map(len, rows))} tokens exceeds the model's {limit}")
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            T = max(map(len, chunk))
            ids = torch.zeros(len(chunk), T, dtype=torch.long)
            for i, row in enumerate(chunk):  # right padding: causal attention never lets it reach the real tokens
                ids[i, :len(row)] = torch.tensor(row)
            with torch.no_grad():
                logits = self.model(ids.to(device)).logits  # (B, T, V)
            logp = token_logprobs(logits[:, :-1], ids[:, 1:].to(device))  # (B, T-1)
            for i, row in enumerate(chunk):  # the line's tokens are positions len(prompt)..len(row)-1
                out.append(logp[i, len(prompt_ids) - 1:len(row) - 1].sum())
        return torch.stack(out).cpu()

    def score(self, question: str, reply: str) -> JudgeScore:
        import torch
        rubric = self.rubric
        prompt_ids = self.tokenizer.encode_chat([{"role": "user", "content": rubric.prompt(question, reply)}],
                                                enable_thinking=False, add_generation_prompt=True).ids
        scale = torch.arange(rubric.low, rubric.high + 1, dtype=torch.float32)  # (K,)
        lines = [f"{name}: {k}\n" for name in rubric.dimensions for k in range(rubric.low, rubric.high + 1)]
        logp = self.line_logprobs(prompt_ids, lines).view(len(rubric.dimensions), len(scale))  # (D, K)
        expected = (logp.softmax(dim=-1) * scale).sum(dim=-1)  # (D,)
        dims = {name: float(v) for name, v in zip(rubric.dimensions, expected)}
        self.stats["scored"] += 1
        return JudgeScore(rubric.normalise(dims), dims, raw="", attempts=1)


def judge_reward(judge: "JudgeClient | LocalJudge", concurrency: int = 8) -> RewardFn:
    """A reward that asks `judge` to score each (last user turn, final answer) pair; None when unparsable.
    Use concurrency=1 with a LocalJudge (torch already uses the cores)."""
    def reward(prompts: Sequence, completions: Sequence, **columns) -> list[float | None]:
        pairs = [(user_text(p), final_answer(c)) for p, c in zip(prompts, completions)]
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(pairs)))) as pool:
            return [s.score for s in pool.map(lambda qa: judge.score(*qa), pairs)]
    reward.__name__ = f"judge_{judge.rubric.name}"
    return reward


# ---------------------------------------------------------------------------------------------------------------
# preference-stage rewards (issue 17): template compliance, kexa.tasks constraints, per-domain routing

def template_reward(prompts, completions, enable_thinking=None, **columns) -> list[float | None]:
    """Chat-template compliance as the evaluation measures it (kexa.eval.tasks_eval.score_reply): the completion,
    special tokens kept, ends with `<|endofturn|>`, has a non-empty think block iff reasoning is on (column
    `enable_thinking`, default on), parses into an answer or tool call with no stray template tokens, and every
    `<tool_call>` is JSON. 1.0 or 0.0. Stricter than `format_reward`, which sees only the reasoning layout."""
    from .eval.tasks_eval import score_reply
    modes = _column({"enable_thinking": enable_thinking}, "enable_thinking", len(completions))
    return [float(score_reply(text_of(c), True if m is None else bool(m))["compliant"])
            for c, m in zip(completions, modes)]


def task_reward(prompts, completions, task=None, example=None, **columns) -> list[float | None]:
    """The verifier of a kexa.tasks problem (instruction constraints of `instruct`, tool calls of `tool`, ...):
    column `task` names the task, column `example` holds its Example (or the Example's fields as a dict).
    1.0 / 0.0 as `Task.reward` says; None for rows without a task."""
    from . import tasks as task_registry
    from .tasks.base import Example
    names = _column({"task": task}, "task", len(completions))
    examples = _column({"example": example}, "example", len(completions))
    rewards: list[float | None] = []
    for completion, name, ex in zip(completions, names, examples):
        if name is None:
            rewards.append(None)
            continue
        if ex is None:
            raise ValueError(f"task {name!r} row has no `example` column to verify against")
        ex = Example(**ex) if isinstance(ex, dict) else ex
        rewards.append(float(task_registry.get(name).reward(ex, text_of(completion))))
    return rewards


def only_domains(fn: RewardFn, domains: Sequence[str]) -> RewardFn:
    """`fn` on rows whose column `domain` is one of `domains` (all rows when empty); None on the others.
    E.g. language consistency does not apply to a reply that is only a tool call."""
    if not domains:
        return fn
    keep = set(domains)

    def reward(prompts, completions, domain=None, **columns) -> list[float | None]:
        where = _column({"domain": domain}, "domain", len(completions))
        rows = [i for i, d in enumerate(where) if d in keep]
        out: list[float | None] = [None] * len(completions)
        if rows:
            sub = {k: [v[i] for i in rows] if isinstance(v, (list, tuple)) and len(v) == len(completions) else v
                   for k, v in columns.items()}
            values = fn([prompts[i] for i in rows], [completions[i] for i in rows],
                        domain=[where[i] for i in rows], **sub)
            for i, v in zip(rows, values):
                out[i] = v
        return out
    reward.__name__ = getattr(fn, "__name__", "reward")
    return reward


def rubric_reward(judges: dict[str, "JudgeClient | LocalJudge"], concurrency: int = 8) -> RewardFn:
    """A judge reward with one rubric per domain: each row (column `domain`) is scored by `judges[domain]`
    (`judge_reward`); None for domains without a judge and for replies the judge's output did not parse
    (JudgeClient counts those in its stats["malformed"]; the row's score then rests on the other parts)."""
    per_domain = {d: judge_reward(j, concurrency) for d, j in judges.items()}

    def reward(prompts, completions, domain=None, **columns) -> list[float | None]:
        where = _column({"domain": domain}, "domain", len(completions))
        out: list[float | None] = [None] * len(completions)
        for d, fn in per_domain.items():
            rows = [i for i, w in enumerate(where) if w == d]
            if rows:
                for i, v in zip(rows, fn([prompts[i] for i in rows], [completions[i] for i in rows])):
                    out[i] = v
        return out
    reward.__name__ = "judge"
    return reward
