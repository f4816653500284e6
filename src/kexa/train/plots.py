"""The run's PNG: training/validation loss, learning rate and MoE balance (MaxVio) against steps,
and the last evaluation's expert load shares per MoE layer (a layers x experts heat map); runs that
log task evaluations (SFT: `eval/accuracy/<mode>`, `eval/compliance/<mode>`) get a fifth panel.

Reads metrics.jsonl, so it also works on a finished run: `python -m kexa.train.plots RUN_DIR`.
matplotlib is an optional dependency (`kexa[plot]`); without it the plot is skipped with a warning.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def plot_run(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install 'kexa[plot]'): no training plot written")
        return None
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    task_keys = sorted({k for r in rows for k in r if k.count("/") == 2 and k.startswith(("eval/accuracy/", "eval/compliance/"))})
    fig, axes = plt.subplots(1, 4 + bool(task_keys), figsize=(20 + 5 * bool(task_keys), 4))
    ax_loss, ax_lr, ax_bal, ax_hist = axes[:4]
    if task_keys:
        for k in task_keys:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            axes[4].plot(*zip(*pts), "o-", label=k.removeprefix("eval/"))
        axes[4].set(xlabel="step", ylabel="share", ylim=(-0.02, 1.02), title="held-out tasks (both modes)")
        axes[4].legend(fontsize=7)
    ax_loss.plot(steps, [r["loss"] for r in rows], lw=0.8, label="train CE")
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if val:
        ax_loss.plot(*zip(*val), "o-", label="validation CE")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_lr.plot(steps, [r["lr"] for r in rows])
    ax_lr.set(xlabel="step", ylabel="lr", title="learning rate (WSD)")
    if any("maxvio" in r for r in rows):
        ax_bal.plot(steps, [r.get("maxvio", float("nan")) for r in rows], lw=0.8, label="MaxVio batch (mean over layers)")
        glob = [(r["step"], r["maxvio_global"]) for r in rows if "maxvio_global" in r]
        if glob:
            ax_bal.plot(*zip(*glob), "o-", label="MaxVio global (held-out)")
        ax_bal.legend()
    ax_bal.set(xlabel="step", ylabel="MaxVio", title="expert load balance")
    hist = next((r["expert_load_global"] for r in reversed(rows) if "expert_load_global" in r), None)
    if hist:
        im = ax_hist.imshow(hist, aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax_hist, label="share of routed tokens")
    ax_hist.set(xlabel="expert", ylabel="MoE layer", title="expert loads (last held-out pass)")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return Path(out_path)


if __name__ == "__main__":
    run = Path(sys.argv[1])
    print(plot_run(run / "metrics.jsonl", run / "training.png"))
