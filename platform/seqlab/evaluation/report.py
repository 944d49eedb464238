"""The `seqlab compare` report: one table and two plots, over one run or many seeds.

Every number comes from a job's results.json, which is built from the runs' own logs (metrics.csv) and
accounting, so the report can always be traced back to them.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

VAL_PREFIX = "val/loss"


def read_metrics(path: Path, flops_per_step: float) -> dict[str, Any]:
    """A run's metrics.csv -> its final validation losses, tokens seen, and the validation curves against
    steps, tokens and training FLOPs (tokens at a validation step are interpolated between logged steps)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    token_rows = [(float(r["step"]), float(r["train/tokens_seen"])) for r in rows if r.get("train/tokens_seen")]
    val_rows = [r for r in rows if r.get(VAL_PREFIX)]
    names = sorted(k for k in (val_rows[0] if val_rows else {}) if k.startswith(VAL_PREFIX))
    steps = np.array([float(r["step"]) for r in val_rows])
    token_steps, tokens = (np.array(v) for v in zip(*token_rows)) if token_rows else (np.zeros(1), np.zeros(1))
    curves = {"step": steps.tolist(), "tokens": np.interp(steps, token_steps, tokens).tolist(),
              "flops": (steps * flops_per_step).tolist()}
    curves.update({name: [float(r[name]) for r in val_rows] for name in names})
    return {"tokens_seen": float(tokens[-1]), "val_final": {name: curves[name][-1] for name in names},
            "curves": curves}


def _stat(values: Sequence[float], fmt: str) -> str:
    """One cell: the value, or mean ± sample standard deviation over seeds."""
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(float(np.mean(values)), fmt)} ± {format(float(np.std(values, ddof=1)), fmt)}"


def table_rows(jobs: Sequence[dict], names: Sequence[str]) -> list[tuple[str, list[str]]]:
    def values(name: str, get) -> list[float]:
        out = []
        for job in jobs:
            try:
                out.append(float(get(job["models"][name])))
            except (KeyError, TypeError):
                pass  # a job without that number (e.g. an eval task added later) is left out of the mean
        return out

    rows = [("parameters", lambda m: m["parameters"], ",.0f"),
            ("non-embedding parameters", lambda m: m["non_embedding_parameters"], ",.0f"),
            ("training FLOPs", lambda m: m["training_flops"], ".3e"),
            ("FLOPs per example", lambda m: m["flops_per_example"], ".3e"),
            ("tokens seen", lambda m: m["tokens_seen"], ",.0f"),
            ("steps", lambda m: m["steps"], ",.0f")]
    losses = sorted({k for job in jobs for m in job["models"].values() for k in m.get("val_final", {})})
    rows += [(f"final {k}", lambda m, k=k: m["val_final"][k], ".4f") for k in losses]
    evals = sorted({(t, k) for job in jobs for m in job["models"].values() for t, ms in m.get("eval", {}).items()
                    for k in ms if k not in ("examples", "truncated")})
    rows += [(f"{t} {k}", lambda m, t=t, k=k: m["eval"][t][k], ".2f") for t, k in evals]
    return [(label, [_stat(values(n, get), fmt) for n in names]) for label, get, fmt in rows]


def plot(jobs: Sequence[dict], names: Sequence[str], x_key: str, x_label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    losses = sorted({k for job in jobs for m in job["models"].values() for k in m["curves"] if k.startswith(VAL_PREFIX)})
    fig, axes = plt.subplots(1, max(len(losses), 1), figsize=(5 * max(len(losses), 1), 4), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        for name in names:
            curves = [job["models"][name]["curves"] for job in jobs if name in job["models"]]
            n = min(len(c[loss]) for c in curves)
            if n == 0:
                continue
            x = np.mean([c[x_key][:n] for c in curves], axis=0)
            y = np.array([c[loss][:n] for c in curves])  # (seeds, points)
            ax.plot(x, y.mean(axis=0), marker="o", label=f"{name} (n={len(curves)})")
            if len(curves) > 1:  # the spread over seeds
                ax.fill_between(x, y.min(axis=0), y.max(axis=0), alpha=0.2)
        ax.set_xlabel(x_label)
        ax.set_ylabel(loss)
        ax.set_title(loss)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(jobs: Sequence[dict], out_dir: Path, configs: dict[str, Path]) -> Path:
    """report.md, loss_vs_flops.png, loss_vs_tokens.png and configs/ into out_dir; returns report.md's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(jobs[-1]["models"])
    seeds = sorted({job["seed"] for job in jobs})
    roles = {name: jobs[-1]["models"][name]["role"] for name in names}
    lines = [f"# seqlab compare: {' vs '.join(names)}", "",
             f"Objective `{jobs[-1]['objective']}`; baseline matched by {jobs[-1]['match']}; "
             f"{len(jobs)} run(s), seeds {seeds}" + (" (mean ± standard deviation over seeds)" if len(jobs) > 1 else "")
             + ".", "",
             "| | " + " | ".join(f"{n} ({roles[n]})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in table_rows(jobs, names)]
    lines += ["", "Training FLOPs: steps x sequences per step x the mean forward+backward FLOPs of the objective's "
              "examples (accounting beside each architecture).", "",
              "![validation loss against training FLOPs](loss_vs_flops.png)", "",
              "![validation loss against tokens seen](loss_vs_tokens.png)", "",
              "Resolved configs: " + ", ".join(f"[{n}](configs/{n}.yaml)" for n in configs), ""]
    plot(jobs, names, "flops", "training FLOPs", out_dir / "loss_vs_flops.png")
    plot(jobs, names, "tokens", "tokens seen", out_dir / "loss_vs_tokens.png")
    (out_dir / "configs").mkdir(exist_ok=True)
    for name, path in configs.items():
        shutil.copyfile(path, out_dir / "configs" / f"{name}.yaml")
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
