"""Every PNG kexa draws, in one place: the training run's curves, the report card's loss and balance
figures, the NIAH heat map. matplotlib is optional (`kexa[plot]`): `pyplot()` returns None without
it and each caller decides (training and the report skip the figure and say so; the NIAH heat map,
asked for explicitly, raises).

    python -m kexa.plots RUN_DIR          # RUN_DIR/training.png from RUN_DIR/metrics.jsonl
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


# ---------------------------------------------------------------------- a training run (kexa.train.loop)
def plot_run(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """A training run's PNG from its metrics.jsonl: loss, lr, MaxVio, last expert loads; runs that log
    task evaluations (SFT: `eval/accuracy/<mode>`, `eval/compliance/<mode>`) get a fifth panel."""
    plt = pyplot()
    if plt is None:
        warnings.warn("matplotlib is not installed (pip install 'kexa[plot]'): no training plot written")
        return None
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    task_keys = sorted({k for r in rows for k in r
                        if k.count("/") == 2 and k.startswith(("eval/accuracy/", "eval/compliance/"))})
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


# ---------------------------------------------------------------------- the report card (kexa.report)
def plot_losses(rows: list[dict], ext_log: list[dict], path: Path) -> bool:
    """The report's loss PNG: pre-training curves (curriculum boundaries marked), extension rounds."""
    plt = pyplot()
    if plt is None or not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    ax = axes[0]
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], lw=0.7, label="train CE")
    if any("mtp" in r for r in rows):
        ax.plot(steps, [r.get("mtp", float("nan")) for r in rows], lw=0.7, alpha=0.7, label="MTP CE (t+2)")
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if val:
        ax.plot(*zip(*val), "o-", label="held-out CE")
    prev = None
    for r in rows:  # curriculum stage boundaries
        if prev is not None and r.get("stage") != prev:
            ax.axvline(r["step"], color="grey", ls=":", lw=0.8)
            ax.text(r["step"], ax.get_ylim()[1], f" {r['stage']}", va="top", fontsize=8, color="grey")
        prev = r.get("stage")
    ax.set(title="pre-training", xlabel="step", ylabel="loss")
    ax.legend()
    ax = axes[1]
    rounds = [r for r in ext_log if r.get("event") == "round"]
    if rounds:
        labels = [f"{r['stage']}·r{r['round']}" for r in rounds]
        ax.plot(labels, [r.get("train_loss", float("nan")) for r in rounds], "o-", label="stage train CE (last)")
        ax.plot(labels, [r["short_loss"] for r in rounds], "s-", label="short-context held-out CE")
        ax.axhline(rounds[0]["short_loss_base"], color="grey", ls=":", label="before extension")
        ax.legend()
    ax.set(title="context extension rounds", ylabel="loss")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_balance(rows: list[dict], loads: list[list[float]], path: Path) -> bool:
    """The report's balance PNG: MaxVio during pre-training, token share per expert of the final model."""
    plt = pyplot()
    if plt is None or not loads:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    vio = [(r["step"], r["maxvio"]) for r in rows if "maxvio" in r]
    if vio:
        axes[0].plot(*zip(*vio), lw=0.7, label="MaxVio (batch, mean over layers)")
    gvio = [(r["step"], r["maxvio_global"]) for r in rows if "maxvio_global" in r]
    if gvio:
        axes[0].plot(*zip(*gvio), "o-", label="MaxVio (global, held-out)")
    axes[0].set(title="expert balance during pre-training", xlabel="step", ylabel="MaxVio")
    axes[0].legend()
    arr = np.array(loads, dtype=float)
    frac = arr / arr.sum(1, keepdims=True)
    im = axes[1].imshow(frac, aspect="auto", cmap="viridis")
    axes[1].set(title="token share per expert (final model, held-out)", xlabel="expert", ylabel="MoE layer")
    fig.colorbar(im, ax=axes[1])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_rl(rows: list[dict], path: Path) -> bool:
    """The report's RL PNG from kexa rl's metrics.jsonl: mean reward per step (and per task family), then the
    rollout mechanics: filtered (zero-variance) fraction, truncated importance weights, truncated replies."""
    plt = pyplot()
    rows = [r for r in rows if "reward_mean" in r]
    if plt is None or not rows:
        return False
    def series(k: str) -> list[float]:  # None (e.g. no IS weights when every group was filtered) -> a gap
        return [float("nan") if r.get(k) is None else r[k] for r in rows]

    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    steps = [r["step"] for r in rows]
    axes[0].plot(steps, series("reward_mean"), "o-", label="reward (all)")
    for k in sorted({k for r in rows for k in r if k.startswith("reward/")}):
        axes[0].plot(steps, series(k), ".--", lw=0.8, label=k)
    axes[0].set(title="RL reward (rollout batch mean)", xlabel="step", ylabel="reward")
    axes[0].legend(fontsize=7)
    for k, label in (("filtered_frac", "zero-variance prompts dropped"), ("is_truncated_frac", "IS weight at C"),
                     ("truncated_frac", "replies cut at the length limit")):
        axes[1].plot(steps, series(k), "o-", label=label)
    axes[1].set(title="AGAPO rollout mechanics", xlabel="step", ylabel="share", ylim=(-0.02, 1.02))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------- NIAH (kexa.eval.niah, kexa extend)
def plot_heatmap(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Depth (rows) x length (columns) accuracy heat map, each cell annotated."""
    plt = pyplot()
    if plt is None:
        raise ImportError("matplotlib is not installed (pip install 'kexa[plot]'): no heat map")
    grid = np.asarray(result["grid"]).T  # (depths, lengths)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * grid.shape[1], 1.0 + 0.55 * grid.shape[0]))
    im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(result["lengths"])), [str(n) for n in result["lengths"]])
    ax.set_yticks(range(len(result["depths"])), [f"{d:.0%}" for d in result["depths"]])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title or f"{result['task']}: mean accuracy {result['mean_accuracy']:.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    run = Path(sys.argv[1])
    print(plot_run(run / "metrics.jsonl", run / "training.png"))
