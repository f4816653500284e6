"""The speedrun's report card: RUN/report.md + PNG plots, rebuilt from the run's own logs.

Every number comes from files the run wrote (stages.json, tokenizer_compare.json,
pretrain/metrics.jsonl, extend/extend_log.jsonl, extend/niah/*.json, sft/sft_eval.json, rl/rl_eval.json,
rl/metrics.jsonl, preference/preference_eval.json, preference/metrics.jsonl, eval.json, eval/results.json), so
`kexa report RUN` regenerates the same report at any time. Plots need matplotlib (`kexa[plot]`);
without it the report is written with tables only and says so.

    kexa report runs/speedrun
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from .plots import plot_balance, plot_losses, plot_rl, pyplot

SECTIONS = ["Headline", "Targets", "Machine", "Tokenizer", "Parameters", "Pre-training", "Expert balance",
            "Context extension", "SFT", "RL", "Preference", "Evaluation", "Decoding", "KV cache", "Samples", "Chat page", "Wall time"]
SFT_TITLE = "SFT: held-out tasks before / after"  # the section kexa.eval.tasks_eval.report_markdown writes
RL_TITLE = "RL: held-out tasks before / after"


NATURAL = ("ko", "en", "es", "de", "ja", "vi")  # generated stem text lifts the all-domain mean: shown apart


def natural_gain(tokcmp: dict) -> float:
    gains = [r["gain"] for d, r in tokcmp["domains"].items() if d in NATURAL]
    return sum(gains) / len(gains) if gains else float("nan")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def machine() -> dict:
    import torch
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("tokenizers", "safetensors", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none", **versions}


# ---------------------------------------------------------------------- the report
# the grid's rows per suite (default: the suite's first metric); agentic adds issue 20's tool-call validity
EVAL_METRICS = {"agentic": ["pass_rate", "tool_call_validity", "steps_mean"], "translation": "chrf",
                "ifeval": "prompt_strict"}


def evaluation_section(results: dict) -> str:
    """The suite x stage x mode grid of RUN/eval/results.json (`kexa.eval.harness.stages_table`), its settings,
    and where items failed (an error is a call that could not be made, e.g. a prompt past the model's context)."""
    from .eval.harness import stages_table
    stages = results.get("stages") or {}
    if not stages:
        return "(no eval stage in this run)\n"
    st = results["settings"]
    lines = [f"`kexa eval run` on each stage's model: temperature {st['temperature']}, top-p {st['top_p']}, "
             f"MTP {'on' if st['mtp'] else 'off'}, {st['limit']} item(s) per suite and mode, at most "
             f"{max(st['max_tokens_by_suite'].values())} new tokens per reply. "
             f"Per-item outputs: `eval/<stage>/items/`.\n",
             stages_table(stages, {s: m for s, m in EVAL_METRICS.items() if s in st["suites"]})]
    failed = [f"{stage} {key.split('/')[0] if '/' in key else st['modes'][0]} {suite}: {v}"
              for stage, r in stages.items() for suite, m in r["suites"].items()
              for key, v in m.items() if key.split("/")[-1] == "errors" and v and ("/" in key or len(st["modes"]) == 1)]
    if failed:
        lines.append(f"Items that could not be asked (not scored, counted apart; the reason is in each item's "
                     f"`error`): {'; '.join(failed)}.\n")
    return "\n".join(lines)


RL_COLUMNS = (("reward_mean", ".3f"), ("accuracy", ".3f"), ("filtered_frac", ".0%"), ("is_truncated_frac", ".1%"),
              ("truncated_frac", ".0%"), ("response_len", ".1f"))


def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def rl_section(run: Path, summary: dict) -> str:
    """RL (kexa rl, AGAPO): held-out accuracy by task family before/after (rl_eval.json, the stage's own
    report), then the rollout numbers of rl/metrics.jsonl: reward curve, filtered fraction, IS truncation,
    response length."""
    from .eval.tasks_eval import report_markdown
    rl_eval = _read_json(run / "rl" / "rl_eval.json")
    if not rl_eval:
        return "## RL\n\n(no RL stage in this run)\n"
    rows = [r for r in _read_jsonl(run / "rl" / "metrics.jsonl") if "reward_mean" in r]
    lines = [report_markdown(rl_eval, RL_TITLE)]
    if rows:
        lines.append(f"{summary.get('steps', rows[-1]['step'])} AGAPO optimiser steps from the SFT model; per step, "
                     f"the rollout batch it trained on:\n")
        lines.append("| step | reward | accuracy | filtered (zero-variance) | IS weight truncated | "
                     "replies cut | response length |\n|---|---|---|---|---|---|---|")
        for r in rows:  # a step whose every group was filtered has no IS weights: blank
            lines.append(f"| {r['step']} | " + " | ".join(_fmt(r.get(k), spec) for k, spec in RL_COLUMNS) + " |")
        means = {k: _mean_of(rows, k) for k, _ in RL_COLUMNS}
        lines.append(f"\nMeans over the steps: reward {_fmt(means['reward_mean'], '.3f')}, filtered fraction "
                     f"{_fmt(means['filtered_frac'], '.0%')}, IS-truncated tokens "
                     f"{_fmt(means['is_truncated_frac'], '.1%') or 'none (no group kept, no update)'}, "
                     f"response length {_fmt(means['response_len'], '.1f')} tokens.\n")
        if plot_rl(rows, run / "rl_reward.png"):
            lines.append("![RL reward](rl_reward.png)\n")
    return "\n".join(lines)


def preference_section(run: Path) -> str:
    """Preference learning (kexa preference, GROUPER): held-out rule score per domain and each reward part,
    before/after (preference_eval.json), refusal numbers, and the training batches' mean scores."""
    ev = _read_json(run / "preference" / "preference_eval.json")
    cols = [c for c in ("before", "after") if c in ev]
    if not cols:
        return "## Preference\n\n(no preference stage in this run)\n"
    metrics = {c: ev[c]["metrics"] for c in cols}
    keys = sorted({k for m in metrics.values() for k in m if k.startswith(("eval/rule_score", "eval/reward/",
                                                                           "eval/refusal", "eval/over_refusal",
                                                                           "eval/judge", "eval/win_rate"))})
    lines = ["## Preference\n", "Held-out prompts, greedy replies of the RL model (before) and of the preference "
             "model (after), scored by the stage's rule rewards (`preference/preference_eval.json`):\n",
             "| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k in keys:
        name = k.removeprefix("eval/").replace("rule_score/", "score: ").replace("reward/", "part: ")
        lines.append(f"| {name} | " + " | ".join("" if metrics[c].get(k) is None else f"{metrics[c][k]:.3f}"
                                               for c in cols) + " |")
    rows = [r for r in _read_jsonl(run / "preference" / "metrics.jsonl") if "score_mean" in r]
    if rows:
        lines.append(f"\nTraining: {len(rows)} GROUPER steps, mean sampled score {_mean_of(rows, 'score_mean'):.3f}, "
                     f"zero-variance groups skipped {_mean_of(rows, 'skipped_frac'):.0%}, response length "
                     f"{_mean_of(rows, 'response_len'):.1f} tokens.\n")
    for sample in ev[cols[-1]].get("samples", [])[:4]:
        lines.append(f"- *{sample['domain']}*: {sample['prompt'][:80]!r} → {sample['reply'][:160]!r}")
    lines.append("")
    return "\n".join(lines)


TARGET_LABELS = {
    "addition": "2-digit + 2-digit addition with carry, reasoning mode (held-out, 6 languages)",
    "lookup": "key-value lookup among 8 pairs, reasoning mode (held-out, 6 languages)",
    "compliance_reasoning": "template compliance, reasoning mode (every family)",
    "compliance_non_reasoning": "template compliance, non-reasoning mode (every family)",
    "tool_calls": "declared tool called with valid JSON arguments (held-out tool-use prompts)",
    "niah": "NIAH at 8x the pre-training length",
    "short_loss": "short-context held-out loss change after extension",
    "rl_gain": "RL gain over SFT on its trained families (held-out, both modes)",
    "mtp": "MTP self-speculative vs plain decoding, batch 1",
    "outside": "through transformers alone, prompts phrased unlike kexa.tasks (no threshold)",
}


def _target_value(r: dict) -> str:
    v, name = r["value"], r["target"]
    if v is None:
        return "n/a"
    if name == "mtp":
        return f"{v:.2f}× (k = {r.get('k')}, acceptance {100 * (r.get('acceptance') or 0):.0f}%)"
    if name in ("short_loss", "rl_gain"):
        text = f"{100 * v:+.1f}%" if name == "short_loss" else f"{100 * v:+.1f} points"
        if r.get("interval"):
            text += f" [{100 * r['interval'][0]:+.1f}, {100 * r['interval'][1]:+.1f}]"
        return text
    text = f"{v:.2f}"
    if r.get("interval"):
        text += f" [{r['interval'][0]:.2f}, {r['interval'][1]:.2f}]"
    return text + (f" (n = {r['n']})" if r.get("n") else "")


def targets_section(run: Path) -> str:
    """The capability targets of the final model (RUN/targets.json, kexa.eval.targets): one row each,
    met or missed, then accuracy by language and sample chats in both modes."""
    t = _read_json(run / "targets.json")
    if not t:
        return "## Targets\n\n(no targets stage in this run)\n"
    st = t["settings"]
    lines = ["## Targets\n", f"The final model (`{Path(t['model']).name}/`), held-out problems, temperature "
             f"{st['temperature']}, top-p {st['top_p']}, up to {st['max_new_tokens']} new tokens (NIAH: greedy "
             f"retrieval). Brackets: 95% intervals (Wilson; Newcombe for the RL gain).\n",
             "| target | measured | threshold | met |", "|---|---|---|---|"]
    for r in t["targets"]:
        thr = r["threshold"]
        thr_text = ("—" if r["met"] is None else f"≤ {100 * thr:+.0f}%" if r["target"] == "short_loss"
                    else f"≥ {100 * thr:+.0f} points, interval > 0" if r["target"] == "rl_gain"
                    else f"≥ {thr:.1f}×" if r["target"] == "mtp" else f"≥ {thr:.2f}")
        met = "—" if r["met"] is None else "✓" if r["met"] else "**miss**"
        lines.append(f"| {TARGET_LABELS.get(r['target'], r['target'])} | {_target_value(r)} | {thr_text} | {met} |")
    by = [r for r in t["targets"] if r.get("by_lang")]
    if by:
        langs = list(by[0]["by_lang"])
        lines += ["", "Accuracy by language (reasoning mode):\n", "| task | " + " | ".join(langs) + " |",
                  "|---|" + "---|" * len(langs)]
        for r in by:
            lines.append(f"| {r['target']} | " + " | ".join(f"{r['by_lang'][lg]:.2f}" for lg in langs) + " |")
    samples = t.get("details", {}).get("compliance", {}).get("samples", [])
    if samples:
        lines += ["", "Sample chats of the final model (held-out prompts, both modes):\n"]
        for smp in samples:
            reply = smp["reply"].replace("\n", "⏎ ")
            lines.append(f"- *{smp['mode'].replace('_', '-')}, {smp['task']}, {smp['lang']}*: **{smp['prompt'].strip()}** "
                         f"→ `{reply}` (reference: `{smp['reference']}`)")
    outside = t.get("details", {}).get("outside")
    if outside:
        lines += ["", f"Through transformers alone ({outside['n']} prompts written for this check):\n"]
        for it in outside["items"][:4]:
            reply = it["reply"].replace("\n", "⏎ ")
            lines.append(f"- **{it['prompt'][:90]}** → `{reply[:200]}` ({'correct' if it['correct'] else 'wrong'}, "
                         f"expected {it['expected']})")
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    stages = _read_json(run / "stages.json")
    tokcmp = _read_json(run / "tokenizer_compare.json")
    rows = _read_jsonl(run / "pretrain" / "metrics.jsonl")
    ext_log = _read_jsonl(run / "extend" / "extend_log.jsonl")
    ev = _read_json(run / "eval.json")
    sft_eval = _read_json(run / "sft" / "sft_eval.json")
    md: list[str] = []
    add = md.append

    total_wall = sum(s.get("wall_s", 0) for s in stages.values())
    add("# kexa speedrun report card\n")
    add(f"Run `{run}` · generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} · "
        f"stages' wall time {total_wall / 60:.1f} min. Every number below was measured in this run "
        f"(regenerate with `kexa report {run}`).\n")

    # headline
    add("## Headline\n")
    pre = stages.get("pretrain", {}).get("summary", {})
    base = next((r for r in ext_log if r.get("event") == "baseline"), {})
    last_round = [r for r in ext_log if r.get("event") == "round"]
    last = last_round[-1] if last_round else {}
    spec = ev.get("decode", {}).get("speculative", {})
    add("| metric | value |\n|---|---|")
    add(f"| wall time (all stages) | {total_wall / 60:.1f} min |")
    if pre.get("final_val_loss") is not None:
        add(f"| final pre-training held-out loss | {pre['final_val_loss']:.4f} |")
    sc = ev.get("short_context", {})
    if sc:  # "final": the post-trained model, when the run has a stage after extension
        names = ["pre-trained", "extended"] + ([f"final ({ev.get('final_model', '?')})"] if "final" in sc else [])
        losses = [sc[k]["val_loss"] for k in ("pretrained", "extended", "final") if k in sc]
        add(f"| short-context held-out loss, {' → '.join(names)} | {' → '.join(f'{v:.4f}' for v in losses)} |")
    for mode in sft_eval.get("after", {}).get("accuracy_mean", {}):
        for key, label in (("accuracy_mean", "held-out task accuracy"), ("compliance", "template compliance")):
            values = [sft_eval[w][key][mode] for w in ("before", "after") if w in sft_eval]
            add(f"| SFT, {mode.replace('_', '-')} mode: {label}, before → after | "
                f"{' → '.join(f'{v:.2f}' for v in values)} |")
    if tokcmp:
        add(f"| SuperBPE bytes/token gain over plain BPE (mean of domains) | {100 * tokcmp['mean_gain']:+.1f}% "
            f"(natural languages {100 * natural_gain(tokcmp):+.1f}%) |")
    if base.get("niah") and last.get("niah"):
        before = ", ".join(f"{k}: {v:.2f}" for k, v in base["niah"].items())
        after = ", ".join(f"{k}: {v:.2f}" for k, v in last["niah"].items())
        add(f"| NIAH accuracy before extension | {before} |")
        add(f"| NIAH accuracy after extension | {after} |")
    for k, v in spec.items():
        add(f"| MTP speculative decode speed-up, {k} draft(s) | {v['speedup']:.2f}× "
            f"(acceptance {100 * (v['acceptance_rate'] or 0):.0f}%) |")
    add("")

    add(targets_section(run))

    # machine
    add("## Machine\n")
    m = machine()
    add("| | |\n|---|---|")
    for k, v in m.items():
        add(f"| {k} | {v} |")
    add("")

    # tokenizer
    add("## Tokenizer\n")
    if tokcmp:
        add(f"SuperBPE vs plain BPE, both {tokcmp['vocab_size']} tokens, trained on the same corpus; "
            f"bytes per token on the held-out split (higher is better).\n")
        add("| domain | SuperBPE | plain BPE | gain |\n|---|---|---|---|")
        for d, r in tokcmp["domains"].items():
            add(f"| {d} | {r['superbpe_bytes_per_token']:.3f} | {r['bpe_bytes_per_token']:.3f} | {100 * r['gain']:+.1f}% |")
        add(f"| **mean** | | | **{100 * tokcmp['mean_gain']:+.1f}%** |")
        add(f"| mean of the natural languages ({', '.join(NATURAL)}) | | | {100 * natural_gain(tokcmp):+.1f}% |\n")
    else:
        add("(no tokenizer comparison in this run)\n")

    # parameters
    add("## Parameters\n")
    p = ev.get("params", {})
    if p:
        add("| | count |\n|---|---|")
        for k in ("total_params", "active_params", "mtp_params", "embedding_params"):
            add(f"| {k.replace('_', ' ')} | {p[k]:,} |")
        add("")

    # pre-training
    add("## Pre-training\n")
    if rows:
        first, lastrow = rows[0], rows[-1]
        add(f"{lastrow['step']} optimiser steps, {lastrow.get('tokens', 0):,} tokens; train CE "
            f"{first['loss']:.3f} → {lastrow['loss']:.3f}; median {sorted(r['tok_per_s'] for r in rows)[len(rows) // 2]:.0f} "
            f"tokens/s; {sum(1 for r in rows if r.get('skipped'))} skipped steps. Curriculum stages: "
            + ", ".join(dict.fromkeys(r.get("stage", "?") for r in rows)) + ".\n")
        if plot_losses(rows, ext_log, run / "loss.png"):
            add("![losses](loss.png)\n")

    # balance
    add("## Expert balance\n")
    recipes = sorted((run / "pretrain" / "checkpoints").glob("step_*/recipe.json"))
    gamma = _read_json(recipes[-1]).get("balance", {}).get("gamma", "?") if recipes else "?"  # stated beside MaxVio
    if ev.get("maxvio_per_layer"):
        vio = ev["maxvio_per_layer"]
        add(f"Final model on held-out data (expert-bias step gamma = {gamma}): MaxVio per MoE layer "
            f"{', '.join(f'{v:.2f}' for v in vio)} (mean {sum(vio) / len(vio):.2f}); dead experts "
            f"{sum(1 for layer in ev['expert_loads'] for c in layer if c == 0)}.\n")
        if plot_balance(rows, ev["expert_loads"], run / "balance.png"):
            add("![balance](balance.png)\n")

    # context extension
    add("## Context extension\n")
    if ext_log:
        add("| event | stage | round | seq len | NIAH by length | short loss | regression | decision |")
        add("|---|---|---|---|---|---|---|---|")
        for r in ext_log:
            if r.get("event") not in ("baseline", "round"):
                continue
            niah = ", ".join(f"{k}: {v:.2f}" for k, v in (r.get("niah") or {}).items())
            reg = f"{100 * r['regression']:+.2f}%" if "regression" in r else ""
            add(f"| {r['event']} | {r.get('stage', '')} | {r.get('round', '')} | {r.get('seq_len', r.get('short_seq_len', ''))} "
                f"| {niah} | {r['short_loss']:.4f} | {reg} | {r.get('decision', '')} |")
        add("")
        heat = sorted((run / "extend" / "niah").glob("*.png")) if (run / "extend" / "niah").exists() else []
        if heat:
            for pick, label in ((heat[0], "before extension"), (heat[-1], "after extension")):
                dest = run / f"niah_{'before' if label.startswith('before') else 'after'}.png"
                shutil.copyfile(pick, dest)
                add(f"NIAH {label} (`{pick.name}`):\n\n![{label}]({dest.name})\n")

    # SFT: the section kexa sft wrote from its own evaluation (sft_eval.json), not re-computed
    sft_stage = stages.get("sft", {}).get("summary", {})
    if sft_eval:
        from .eval.tasks_eval import report_markdown
        add(report_markdown(sft_eval, SFT_TITLE))
        if sft_stage.get("final_train_loss") is not None:
            add(f"{sft_stage.get('steps')} optimiser steps from the extended model; final train loss "
                f"{sft_stage['final_train_loss']:.4f}"
                + (f", held-out task-conversation loss {sft_stage['final_val_loss']:.4f}"
                   if sft_stage.get("final_val_loss") is not None else "") + ".\n")
        if (run / "sft" / "training.png").exists():
            add("![SFT training](sft/training.png)\n")
    else:
        add("## SFT\n\n(no SFT stage in this run)\n")

    add(rl_section(run, stages.get("rl", {}).get("summary", {})))
    add(preference_section(run))

    # evaluation: the harness's suites on every stage's model, both modes (K-EXAONE Table 3 in miniature)
    add("## Evaluation\n")
    add(evaluation_section(_read_json(run / "eval" / "results.json")))

    # decoding
    add("## Decoding\n")
    dec = ev.get("decode", {})
    if dec:
        add(f"Batch 1, greedy, {dec['new_tokens']} new tokens, medians of alternating runs.\n")
        add("| decoding | tokens/s | speed-up | acceptance | accepted/step | same tokens as greedy |")
        add("|---|---|---|---|---|---|")
        add(f"| plain | {dec['plain_tokens_per_s']:.1f} | 1.00× | | | |")
        for k, v in spec.items():
            add(f"| MTP speculative, {k} draft(s) | {v['tokens_per_s']:.1f} | {v['speedup']:.2f}× | "
                f"{100 * (v['acceptance_rate'] or 0):.0f}% | {v['mean_accepted_length'] or 0:.2f} | "
                f"{'yes' if v['identical_to_greedy'] else 'NO'} |")
        add("")

    # KV cache
    add("## KV cache\n")
    for name, entries in ev.get("kv_cache", {}).items():
        add(f"**{name}** (bf16): hybrid (global layers × tokens + sliding layers × window) vs full attention\n")
        add("| tokens | hybrid | full attention | ratio |\n|---|---|---|---|")
        for e in entries:
            add(f"| {e['tokens']:,} | {_fmt_bytes(e['hybrid_bytes'])} | {_fmt_bytes(e['full_bytes'])} | "
                f"{100 * e['hybrid_bytes'] / e['full_bytes']:.1f}% |")
        add("")

    # samples
    add("## Samples\n")
    add(f"Raw continuations (no chat template) by the final model ({ev.get('final_model', 'extend')}).\n")
    for s in ev.get("samples", []):
        add(f"- **{s['prompt']}** → {s['completion']!r}")
    add("")

    # the chat page talking to the final model
    add("## Chat page\n")
    chat = _read_json(run / "chat.json")
    if chat.get("png"):
        add(f"`kexa serve --model {run / 'model'}`, the page at `/`, headless Chromium (kexa.serve.screenshot), "
            f"temperature 1.0, top-p 0.95:\n\n![the chat page talking to the final model]({chat['png']})\n")
        for t in chat.get("turns", []):
            add(f"- *{'reasoning' if t['thinking'] else 'non-reasoning'}*: **{t['prompt']}** → "
                f"{('`<think>` ' + repr(t['reasoning'][:160]) + ' ') if t.get('reasoning') else ''}"
                f"`{(t.get('content') or t.get('error') or '')[:200]}`")
        add("")
    else:
        add(f"(no screenshot: {chat.get('skipped', 'no chat stage in this run')})\n")

    # wall time
    add("## Wall time\n")
    add("| stage | wall time | final train loss |\n|---|---|---|")
    for name, s in stages.items():
        loss = s.get("summary", {}).get("final_train_loss")
        add(f"| {name} | {s.get('wall_s', 0):.0f} s | {'' if loss is None else f'{loss:.4f}'} |")
    add("")
    if pyplot() is None:
        add("_matplotlib is not installed: plots were skipped (pip install 'kexa[plot]')._\n")

    out = run / "report.md"
    tmp = run / "report.md.tmp"
    tmp.write_text("\n".join(md))
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kexa report", description="regenerate RUN/report.md from the run's logs")
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    if not (args.run_dir / "stages.json").exists():
        print(f"kexa report: {args.run_dir} has no stages.json (not a speedrun folder)", file=sys.stderr)
        return 2
    print(write_report(args.run_dir))
    return 0
