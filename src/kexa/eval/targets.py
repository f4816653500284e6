"""The speedrun's capability targets, measured on its final model (issue #20's list, at toy scale).

Every figure is computed here, in the run, from held-out problems (never trained on), with the
report's sampling settings (temperature 1.0, top-p 0.95) unless a target says otherwise:

    addition      2-digit + 2-digit addition with a carry (kexa.tasks `arith` tier 1), reasoning mode,
                  accuracy per language and overall with a 95% Wilson interval        target >= 0.60
    lookup        key-value lookup among 8 pairs (`lookup` tier 1), reasoning mode     target >= 0.60
    compliance    chat-template compliance (kexa.eval.tasks_eval.score_reply) over every family,
                  in reasoning and in non-reasoning mode                               target >= 0.95 each
    tool_calls    held-out tool-use prompts (`tool` tier 1, reasoning mode) answered with a call of a
                  declared tool whose arguments are a JSON object matching its schema  target >= 0.80
    niah          needle in a haystack at 8x the pre-training length, >= 50 cases, greedy (a retrieval
                  probe, as kexa.eval.niah always runs it)                             target >= 0.90
    short_loss    held-out short-context loss after context extension vs before        target <= +2%
    rl_gain       RL's held-out accuracy gain over the SFT model on its trained families (from the RL
                  stage's own before/after evaluation), with a 95% Newcombe interval   target >= +5 points,
                                                                                       interval above 0
    mtp           MTP self-speculative decoding vs plain decoding at batch 1          target >= 1.2x
    outside       the final model through `transformers` alone (AutoModelForCausalLM + the exported chat
                  template), prompts phrased unlike any kexa.tasks template: additions and lookups in
                  English and Korean written here; reported, no threshold (a check that the skill is not
                  the template)

    from kexa.eval.targets import measure_targets
    result = measure_targets(model_dir, run_dir, n=20)   # -> {"targets": [...], "details": {...}}
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .niah import wilson_interval

REPORT_SAMPLING = {"temperature": 1.0, "top_p": 0.95}
THRESHOLDS = {"addition": 0.60, "lookup": 0.60, "compliance_reasoning": 0.95, "compliance_non_reasoning": 0.95,
              "tool_calls": 0.80, "niah": 0.90, "short_loss": 0.02, "rl_gain": 0.05, "mtp": 1.2}


def newcombe_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95% interval of p2 - p1 (Newcombe's hybrid score method from two Wilson intervals): for "after -
    before" accuracies of independent samples (conservative when the same problems are re-asked)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p2 - p1
    return d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def paired_mean_interval(before: list[float], after: list[float], resamples: int = 10_000,
                         seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of mean(after - before) over the same items scored twice (the
    preference stage's held-out prompts answered greedily by the input and the trained model): the
    pairing removes the prompts' own spread, and scores summed from several rules are not proportions."""
    import numpy as np
    if len(before) != len(after) or not before:
        raise ValueError(f"paired scores need two equal non-empty lists, got {len(before)} and {len(after)}")
    d = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _row(name: str, value: float | None, threshold: float, met: bool | None, **extra) -> dict[str, Any]:
    return {"target": name, "value": value, "threshold": threshold, "met": met, **extra}


def accuracy_rows(report: dict, mode: str) -> dict[str, dict]:
    """task -> {"accuracy", "n", "correct", "interval" (95% Wilson), "by_lang"} from an evaluate_tasks report."""
    n = report["n_per_cell"]
    out = {}
    for task, by_lang in report["accuracy"][mode].items():
        correct = round(sum(a * n for a in by_lang.values()))
        total = n * len(by_lang)
        out[task] = {"accuracy": correct / total, "n": total, "correct": correct,
                     "interval": list(wilson_interval(correct, total)), "by_lang": by_lang}
    return out


def tool_call_valid(reply: str, tools: list[dict]) -> bool:
    """A reply (text after the generation prompt) calls at least one tool, and every call is valid by the
    agentic suite's rule (`call_is_valid`: a declared tool, JSON-object arguments that match its schema)."""
    from ..tokenizer import specials as S
    from ..tokenizer.chat import parse_response
    from .suites.agentic import call_is_valid
    body = reply[: -len(S.END_OF_TURN)] if reply.endswith(S.END_OF_TURN) else reply
    if S.THINK_CLOSE in body:  # reasoning mode: the prompt opened <think>
        body = body.split(S.THINK_CLOSE, 1)[1]
    calls = parse_response(body)["tool_calls"]
    if not calls or body.count(S.TOOL_CALL_OPEN) != len(calls):
        return False
    return all(call_is_valid(c.get("function", c).get("name"), c.get("function", c).get("arguments"), tools)
               for c in calls)


def rl_gain(rl_eval: dict) -> dict[str, Any]:
    """After - before held-out accuracy of the RL stage over its trained families, reasoning and
    non-reasoning answers pooled, with a Newcombe interval."""
    counts = {}
    for when in ("before", "after"):
        rep = rl_eval[when]
        rows = [r for mode in rep["accuracy"] for r in accuracy_rows(rep, mode).values()]
        counts[when] = (sum(r["correct"] for r in rows), sum(r["n"] for r in rows))
    (k1, n1), (k2, n2) = counts["before"], counts["after"]
    lo, hi = newcombe_interval(k1, n1, k2, n2)
    return {"before": k1 / n1, "after": k2 / n2, "gain": k2 / n2 - k1 / n1, "interval": [lo, hi], "n": n2,
            "tasks": sorted(rl_eval["after"]["accuracy_by_task"].get("reasoning", {}))}


# ---------------------------------------------------------------- outside check through transformers
OUTSIDE_PROMPTS = [  # (prompt, expected number) — phrasings written for this check, not kexa.tasks templates
    ("Quick question: if I have 47 apples and pick 38 more, how many do I hold? Just the number.", "85"),
    ("Add these two numbers for me: 29 and 56.", "85"),
    ("My bill was 64 dollars and the tip is 27 dollars. What do I pay in total?", "91"),
    ("Sum of 18 and 75 = ?", "93"),
    ("사과 36개에 사과 48개를 더하면 모두 몇 개인가요? 숫자만 답하세요.", "84"),
    ("59 더하기 33은 얼마예요?", "92"),
    ("Here is my locker list.\nmira 412\ntovek 938\nsalu 205\nbrenn 667\nquill 180\nzara 543\nfenno 771\n"
     "dovi 329\nWhich number belongs to brenn?", "667"),
    ("Inventory codes — lamp: 5521, desk: 1873, sofa: 9034, rug: 4410, vase: 2298, bed: 6615, shelf: 3087, "
     "clock: 7742. Tell me the code for the rug.", "4410"),
    ("아래 목록에서 하늘의 번호를 찾아 주세요.\n바다 318\n하늘 752\n구름 164\n들판 930\n강물 527\n숲 806\n돌 241\n"
     "별 695", "752"),
    ("Phone book: Kim 2734, Lee 8102, Park 4459, Choi 9916, Jung 3370, Han 6025, Yoon 1588, Lim 7741. "
     "What is Park's number?", "4459"),
]


def outside_check(model_dir: str | Path, max_new_tokens: int = 192, seed: int = 0) -> dict[str, Any]:
    """The final model in `transformers` alone: AutoTokenizer's chat template (reasoning mode), sampled
    at the report's settings; a reply counts when the expected number is the first number of its answer
    (the text after </think>)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    eos = tok.convert_tokens_to_ids("<|endofturn|>")
    rows = []
    torch.manual_seed(seed)
    for prompt, want in OUTSIDE_PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      enable_thinking=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=True, eos_token_id=eos,
                                 pad_token_id=eos, **REPORT_SAMPLING)
        reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=False)
        answer = reply.split("</think>", 1)[1] if "</think>" in reply else ""
        m = re.search(r"-?\d+", answer)
        rows.append({"prompt": prompt, "expected": want, "reply": reply, "correct": bool(m) and m.group() == want})
    correct = sum(r["correct"] for r in rows)
    return {"accuracy": correct / len(rows), "n": len(rows), "interval": list(wilson_interval(correct, len(rows))),
            "items": rows}


# ---------------------------------------------------------------- all targets
def measure_targets(model_dir: str | Path, run_dir: str | Path, n: int = 20, compliance_n: int = 3, tool_n: int = 10,
                    niah_length: int | None = None, niah_cases: int = 50, haystack=None, max_new_tokens: int = 256,
                    langs: tuple[str, ...] = ("ko", "en", "es", "de", "ja", "vi"), outside: bool = True,
                    progress=print) -> dict[str, Any]:
    """Measure every target on the model in `model_dir`; `run_dir` is the speedrun folder whose stage
    outputs (rl/rl_eval.json, eval.json) hold the others. NIAH runs at `niah_length` (8x the pre-training
    length; None: skipped) in `haystack` (a kexa.data.synthetic.Filler; None: generated text)."""
    import kexa.tasks

    from ..model.transformer import KExaone
    from ..tokenizer import Tokenizer
    from .niah import NiahConfig, evaluate_niah
    from .tasks_eval import evaluate_tasks
    run, model_dir = Path(run_dir), Path(model_dir)
    model, tok = KExaone.from_pretrained(model_dir), Tokenizer.from_pretrained(model_dir)
    rows, details = [], {}
    sampled = dict(REPORT_SAMPLING, max_new_tokens=max_new_tokens)

    progress(f"targets: addition and lookup, {n} held-out problems per language, reasoning mode")
    skill = evaluate_tasks(model, tok, {"arith": kexa.tasks.get("arith"), "lookup": kexa.tasks.get("lookup")},
                           list(langs), n=n, tier=1, modes=("reasoning",), seed=1, **sampled)
    acc = accuracy_rows(skill, "reasoning")
    details["skills"] = {"accuracy": acc, "samples": skill["samples"]}
    for target, task in (("addition", "arith"), ("lookup", "lookup")):
        a = acc[task]
        rows.append(_row(target, a["accuracy"], THRESHOLDS[target], a["accuracy"] >= THRESHOLDS[target],
                         interval=a["interval"], n=a["n"], by_lang=a["by_lang"]))

    progress(f"targets: template compliance, every family, {compliance_n} per language, both modes")
    comp = evaluate_tasks(model, tok, {name: kexa.tasks.get(name) for name in kexa.tasks.names()}, list(langs),
                          n=compliance_n, tier=1, seed=2, samples=3, **sampled)
    details["compliance"] = {k: comp[k] for k in ("compliance", "checks", "accuracy_by_task", "samples")}
    for mode in ("reasoning", "non_reasoning"):
        total = compliance_n * len(langs) * len(kexa.tasks.names())
        value = comp["compliance"][mode]
        rows.append(_row(f"compliance_{mode}", value, THRESHOLDS[f"compliance_{mode}"],
                         value >= THRESHOLDS[f"compliance_{mode}"], n=total,
                         interval=list(wilson_interval(round(value * total), total))))

    progress(f"targets: tool calls, {tool_n} held-out tool-use prompts per language, reasoning mode")
    tools = evaluate_tasks(model, tok, {"tool": kexa.tasks.get("tool")}, list(langs), n=tool_n, tier=1,
                           modes=("reasoning",), seed=3, keep_items=True, **sampled)
    valid = [tool_call_valid(it["reply"], it["tools"]) for it in tools["items"]]
    value = sum(valid) / len(valid)
    details["tool_calls"] = {"valid": value, "correct_call": tools["accuracy_by_task"]["reasoning"]["tool"],
                             "items": tools["items"][:6]}
    rows.append(_row("tool_calls", value, THRESHOLDS["tool_calls"], value >= THRESHOLDS["tool_calls"], n=len(valid),
                     interval=list(wilson_interval(sum(valid), len(valid)))))

    base_len = niah_length
    if base_len:
        depths = [0.0, 0.25, 0.5, 0.75, 1.0]
        progress(f"targets: NIAH at {base_len} tokens, {niah_cases} cases")
        cfg = NiahConfig(lengths=[base_len], depths=depths, samples=max(1, -(-niah_cases // len(depths))),
                         languages=list(langs[:2]), seed=4)
        niah = evaluate_niah(model, tok, cfg, haystack, source="held-out corpus")
        cases = niah["cases_per_length"]
        value = niah["accuracy"][str(base_len)]
        details["niah"] = {k: niah[k] for k in ("accuracy", "interval", "cases_per_length", "grid", "depths", "haystack")}
        rows.append(_row("niah", value, THRESHOLDS["niah"], value >= THRESHOLDS["niah"], n=cases,
                         interval=niah["interval"][str(base_len)], length=base_len))

    ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else {}
    short = ev.get("short_context", {})
    if "pretrained" in short and "extended" in short:
        before, after = short["pretrained"]["val_loss"], short["extended"]["val_loss"]
        change = after / before - 1
        rows.append(_row("short_loss", change, THRESHOLDS["short_loss"], change <= THRESHOLDS["short_loss"],
                         before=before, after=after))
    if (run / "rl" / "rl_eval.json").exists():
        g = rl_gain(json.loads((run / "rl" / "rl_eval.json").read_text()))
        details["rl_gain"] = g
        rows.append(_row("rl_gain", g["gain"], THRESHOLDS["rl_gain"],
                         g["gain"] >= THRESHOLDS["rl_gain"] and g["interval"][0] > 0, interval=g["interval"], n=g["n"],
                         tasks=g["tasks"]))
    spec = ev.get("decode", {}).get("speculative", {})
    if spec:
        best_k, best = max(spec.items(), key=lambda kv: kv[1]["speedup"])
        rows.append(_row("mtp", best["speedup"], THRESHOLDS["mtp"], best["speedup"] >= THRESHOLDS["mtp"],
                         k=best_k, acceptance=best.get("acceptance_rate")))
    if outside:
        progress(f"targets: outside check through transformers ({len(OUTSIDE_PROMPTS)} prompts)")
        details["outside"] = outside_check(model_dir, max_new_tokens)
        o = details["outside"]
        rows.append(_row("outside", o["accuracy"], 0.0, None, n=o["n"], interval=o["interval"]))
    return {"targets": rows, "details": details, "settings": REPORT_SAMPLING | {"max_new_tokens": max_new_tokens},
            "model": str(model_dir)}
