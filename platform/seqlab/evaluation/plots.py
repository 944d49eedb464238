"""The study's plots: validation loss against training FLOPs (log-log, seed bands, fitted curves), and every
eval metric against training FLOPs with its confidence band, one panel per metric."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.evaluation.scaling import PowerLaw
from seqlab.evaluation.study import FIT_METRIC, ROLES

COLOURS = {"model": "tab:blue", "baseline": "tab:orange"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _on_common_grid(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Seeds' curves (their own FLOPs at each validation) -> one FLOPs grid over the range they share, and each
    curve's loss on it (S, G), interpolated in log-log space: seeds of one size need not validate at the same
    FLOPs (their steps and per-step costs differ)."""
    if len(curves) == 1:
        return curves[0][0], curves[0][1][None, :]
    lo, hi = max(x.min() for x, _ in curves), min(x.max() for x, _ in curves)
    grid = np.geomspace(lo, hi, 24) if hi > lo else np.array([hi])
    ys = [np.exp(np.interp(np.log(grid), np.log(x), np.log(y))) for x, y in curves]
    return grid, np.array(ys)


def loss_plot(results: dict[str, Any], path: Path) -> None:
    """One panel per validation loss: each run's curve (mean over seeds, min-max band), fitted L(C)."""
    plt = _pyplot()
    runs = results["runs"]
    losses = sorted({k for r in runs for k in r["curves"] if k.startswith("val/loss")})
    fig, axes = plt.subplots(1, max(len(losses), 1), figsize=(5.5 * max(len(losses), 1), 4.2), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        for role in ROLES:
            for size in sorted({r["size"] for r in runs if r["role"] == role}):
                curves = [r["curves"] for r in runs if r["role"] == role and r["size"] == size and r["curves"][loss]]
                if not curves:
                    continue
                x, y = _on_common_grid([(np.array(c["flops"]), np.array(c[loss])) for c in curves])
                name = next(r["name"] for r in runs if r["role"] == role)
                ax.plot(x, y.mean(axis=0), marker="o", ms=3, color=COLOURS[role], alpha=0.9,
                        label=f"{name} ({role})" if size == 0 else None)
                if len(curves) > 1:  # the spread over seeds
                    ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=COLOURS[role], alpha=0.15)
        fit = results["fit"]
        if loss == FIT_METRIC and fit["available"]:
            xs = np.array([r["flops_seen"] for r in runs])
            grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 100)
            for role in ROLES:
                curve = PowerLaw(**fit[f"{role}_fit"])
                ax.plot(grid, curve(grid), ls="--", color=COLOURS[role], label=f"fit ({role})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel(loss)
        ax.set_title(loss)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def eval_plot(results: dict[str, Any], path: Path) -> None:
    """One panel per eval metric: estimate and 95% CI of each role at each size, against its mean FLOPs."""
    plt = _pyplot()
    metrics = sorted({row["metric"] for size in results["sizes"] for row in size["rows"] if row["kind"] == "eval"})
    cols = min(4, max(len(metrics), 1))
    rows = max(1, math.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    if not metrics:
        axes[0][0].text(0.5, 0.5, "no eval tasks", ha="center", va="center")
    for ax, metric in zip(axes.flat, metrics):
        for role in ROLES:
            points = [(size["roles"][role]["flops_seen"], row[role]) for size in results["sizes"]
                      for row in size["rows"] if row["metric"] == metric]
            if not points:
                continue
            x = np.array([p[0] for p in points])
            est = np.array([p[1]["estimate"] for p in points])
            ax.plot(x, est, marker="o", color=COLOURS[role], label=role)
            ax.fill_between(x, [p[1]["low"] for p in points], [p[1]["high"] for p in points], color=COLOURS[role],
                            alpha=0.2)
        ax.set_xscale("log")
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("training FLOPs", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
