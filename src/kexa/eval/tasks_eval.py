"""Held-out task accuracy and chat-template compliance, in reasoning and non-reasoning mode.

For each task x language x mode, `n` held-out problems (`split="heldout"`: never trained on) are
prompted with the chat template's generation prompt (`enable_thinking` = mode: `<think>\\n` opens the
reasoning, or the empty think block closes it) and decoded greedily by kexa's Engine up to
`<|endofturn|>`. Each reply is scored twice:
  - accuracy: the task's own verifier, `task.reward(example, reply)` (reads the answer after </think>);
  - compliance (`score_reply`): the reply ends with `<|endofturn|>`; its think block is non-empty iff
    reasoning is on (non-reasoning replies hold no think tags at all, the prompt closed the block);
    it parses with `parse_response` into a non-empty answer or tool call with no stray template tokens;
    every `<tool_call>` parses as JSON with a name.
`score_reply` takes text, so an OpenAI-endpoint client (the evaluation harness) reuses it as is;
`evaluate_tasks` is the in-process runner (SFT's evaluation during and after training).

    from kexa.eval.tasks_eval import evaluate_tasks
    report = evaluate_tasks(model, tokenizer, {"arith": kexa.tasks.get("arith")}, langs=["en", "ko"], n=4)
    report["accuracy"]["reasoning"]["arith"]["ko"], report["compliance"]["non_reasoning"]
"""

from __future__ import annotations

import random
import re
from typing import Any

import torch

from ..infer.engine import Engine
from ..infer.sampling import SamplingParams
from ..tokenizer import specials as S
from ..tokenizer.chat import encode_chat, parse_response

MODES = {"reasoning": True, "non_reasoning": False}
CHECKS = ("ends_with_eot", "think_block", "parses", "tool_calls_json")
_STRAY = re.compile(r"<\|[a-z_]+\|>|</?think>|</?tool_call>|</?tool_result>")


def score_reply(text: str, reasoning: bool) -> dict[str, bool]:
    """Template compliance of one reply (the text generated after the generation prompt, special
    tokens kept). Returns each check of CHECKS and "compliant" (all of them)."""
    ended = text.endswith(S.END_OF_TURN)
    body = text[: -len(S.END_OF_TURN)] if ended else text
    # read it as the whole assistant turn: in reasoning mode the prompt opened <think>, so a reply that
    # never closes it is all reasoning and has no answer
    reply = parse_response(f"{S.THINK_OPEN}\n{body}" if reasoning else body)
    if reasoning:  # the prompt opened <think>: the reply must close it after some reasoning
        think = S.THINK_CLOSE in body and bool(reply["reasoning_content"]) and S.THINK_OPEN not in body
    else:  # the prompt held the empty block: no think tags may follow
        think = S.THINK_OPEN not in body and S.THINK_CLOSE not in body
    content = reply["content"]
    parses = (bool(content) or bool(reply["tool_calls"])) and not _STRAY.search(content)
    n_calls = body.count(S.TOOL_CALL_OPEN)
    tools_ok = n_calls == body.count(S.TOOL_CALL_CLOSE) == len(reply["tool_calls"])  # each call valid JSON
    checks = {"ends_with_eot": ended, "think_block": think, "parses": parses, "tool_calls_json": tools_ok}
    return checks | {"compliant": all(checks.values())}


def heldout_prompts(tasks: dict[str, Any], langs: list[str], n: int, tier: int = 1, seed: int = 0) -> list[tuple]:
    """(task name, lang, example) for n held-out problems per task and language, deterministic in seed."""
    out = []
    for name in sorted(tasks):
        for lang in langs:
            rng = random.Random(f"eval:{seed}:{name}:{lang}")
            out += [(name, lang, tasks[name].sample(rng, lang=lang, tier=tier, split="heldout")) for _ in range(n)]
    return out


@torch.no_grad()
def evaluate_tasks(model, tokenizer, tasks: dict[str, Any], langs: list[str], n: int = 4, tier: int = 1,
                   max_new_tokens: int = 128, batch_size: int = 16, seed: int = 0,
                   modes: tuple[str, ...] = ("reasoning", "non_reasoning"), samples: int = 2,
                   temperature: float = 0.0, top_p: float = 1.0, keep_items: bool = False) -> dict[str, Any]:
    """Replies to held-out prompts in each mode (greedy by default; `temperature`/`top_p` for the report's
    sampling settings, seeded) -> accuracy (mode -> task -> lang), accuracy per mode and task, compliance
    per mode and per check, and a few sample chats; `keep_items` adds every (task, lang, mode, reply,
    reward, compliant, the declared tools) row under "items". Restores train mode."""
    was_training = model.training
    engine = Engine(model)  # puts the model in eval mode
    problems = heldout_prompts(tasks, langs, n, tier, seed)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop_token_ids=(tokenizer.eos_id,))
    report: dict[str, Any] = {"n_per_cell": n, "tier": tier, "langs": list(langs), "temperature": temperature,
                              "top_p": top_p, "accuracy": {},
                              "accuracy_by_task": {}, "accuracy_mean": {}, "compliance": {}, "checks": {},
                              "samples": []}
    try:
        for mode in modes:
            reasoning = MODES[mode]
            prompts = [encode_chat(tokenizer, ex.messages, tools=ex.tools, enable_thinking=reasoning,
                                   add_generation_prompt=True).ids for _, _, ex in problems]
            replies: list[str] = []
            for i in range(0, len(prompts), batch_size):
                res = engine.generate(prompts[i:i + batch_size], params)
                replies += [tokenizer.decode(ids) for ids in res.token_ids]
            acc: dict[str, dict[str, list[float]]] = {}
            checks: dict[str, list[bool]] = {c: [] for c in (*CHECKS, "compliant")}
            for (name, lang, ex), text in zip(problems, replies):
                reward = float(tasks[name].reward(ex, text))
                acc.setdefault(name, {}).setdefault(lang, []).append(reward)
                scored = score_reply(text, reasoning)
                for c, ok in scored.items():
                    checks[c].append(ok)
                if keep_items:
                    report.setdefault("items", []).append(
                        {"task": name, "lang": lang, "mode": mode, "reply": text, "reward": reward,
                         "compliant": scored["compliant"], "tools": ex.tools or []})
            report["accuracy"][mode] = {t: {lang: sum(v) / len(v) for lang, v in by.items()} for t, by in acc.items()}
            report["accuracy_by_task"][mode] = {t: sum(sum(v) for v in by.values()) / sum(len(v) for v in by.values())
                                                for t, by in acc.items()}
            scores = [s for by in acc.values() for v in by.values() for s in v]
            report["accuracy_mean"][mode] = sum(scores) / max(len(scores), 1)
            report["checks"][mode] = {c: sum(v) / max(len(v), 1) for c, v in checks.items()}
            report["compliance"][mode] = report["checks"][mode]["compliant"]
            seen_langs: set[str] = set()
            for (name, lang, ex), text in zip(problems, replies):  # a few chats, in different languages
                if len(seen_langs) < samples and lang not in seen_langs:
                    seen_langs.add(lang)
                    report["samples"].append({"mode": mode, "task": name, "lang": lang,
                                              "prompt": ex.messages[-1]["content"], "reply": text,
                                              "reference": ex.answer})
    finally:
        model.train(was_training)
    return report


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's headline numbers as flat metrics.jsonl keys (eval/accuracy/<mode>[/<task>], eval/compliance/<mode>)."""
    out = {}
    for mode, value in report["accuracy_mean"].items():
        out[f"eval/accuracy/{mode}"] = value
        out[f"eval/compliance/{mode}"] = report["compliance"][mode]
        for task, acc in report["accuracy_by_task"][mode].items():
            out[f"eval/accuracy/{mode}/{task}"] = acc
    return out


def report_markdown(reports: dict[str, Any], title: str = "SFT: held-out tasks before / after") -> str:
    """A report-card section from {"before": report, "after": report} (either may be missing): accuracy by
    task x mode, template compliance per mode and check, and the sample chats of the last report."""
    cols = [k for k in ("before", "after") if k in reports]
    if not cols:
        return ""
    modes = list(reports[cols[-1]]["accuracy_by_task"])
    tasks = sorted({t for c in cols for m in modes for t in reports[c]["accuracy_by_task"].get(m, {})})
    head = [f"{c} {m.replace('_', '-')}" for c in cols for m in modes]
    last = reports[cols[-1]]
    lines = [f"## {title}", "",
             f"{last['n_per_cell']} held-out problems per task x language ({', '.join(last['langs'])}) x mode, "
             f"tier {last['tier']}, greedy.", "",
             "| accuracy | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for t in tasks:
        cells = [reports[c]["accuracy_by_task"].get(m, {}).get(t) for c in cols for m in modes]
        lines.append(f"| {t} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |")
    lines += ["", "| compliance | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for check in (*CHECKS, "compliant"):
        cells = [reports[c]["checks"].get(m, {}).get(check) for c in cols for m in modes]
        lines.append(f"| {check} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |")
    lines += ["", "Sample chats (" + cols[-1] + "):", ""]
    for s in last["samples"]:
        reply = s["reply"].replace("\n", "\\n")
        lines.append(f"- *{s['mode']}, {s['task']}, {s['lang']}* — **user:** {s['prompt']} — **model:** `{reply}` "
                     f"(reference: {s['reference']})")
    return "\n".join(lines) + "\n"
