"""The `seqlab compare` report: `report.md`, `results.json`, plots and configs, rendered from finished jobs.

Every number in report.md is formatted from `results.json` (which `study.analyse` computes from the jobs'
results and the runs' own logs and predictions), so the report can always be traced back to them. `seqlab
report DIR` renders it again from a job or sweep folder without training.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from seqlab.evaluation.runs import load_jobs
from seqlab.evaluation.study import ROLES, analyse
from seqlab.train import RESOLVED_CONFIG

REPORT_DIR = "report"
UNIT_NAMES = {"flops": "training FLOPs", "tokens": "tokens", "steps": "steps"}


def fmt(value: float | None, digits: int = 4) -> str:
    """One number as the report prints it (results.json keeps it at full precision)."""
    if value is None:
        return "-"
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 1e6 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.{digits}f}"


def cell(interval: dict[str, float]) -> str:
    if interval["low"] == interval["high"] == interval["estimate"]:
        return fmt(interval["estimate"])
    return f"{fmt(interval['estimate'])} [{fmt(interval['low'])}, {fmt(interval['high'])}]"


def size_table(size: dict[str, Any]) -> list[str]:
    roles = size["roles"]
    names = [f"{roles[r]['name']} ({r})" for r in ROLES]
    lines = [f"| size {size['index']} | {names[0]} | {names[1]} | difference (model - baseline) | verdict |",
             "|---|---|---|---|---|"]

    def plain(label: str, key: str, digits: int = 0) -> str:
        values = [roles[r][key] for r in ROLES]
        shown = [f"{v:,.0f}" if digits == 0 else fmt(v) for v in values]
        return f"| {label} | {shown[0]} | {shown[1]} | | |"

    unit = UNIT_NAMES[size["unit"]]
    lines += [plain("parameters", "parameters"), plain("non-embedding parameters", "non_embedding_parameters"),
              f"| budget ({unit}) | {fmt(size['target'])} | {fmt(size['target'])} | | |",
              f"| realised {unit} | {fmt(roles['model']['realised'])} | {fmt(roles['baseline']['realised'])} | | |",
              f"| largest deviation from the budget | {roles['model']['budget_deviation']:.3%} | "
              f"{roles['baseline']['budget_deviation']:.3%} | | |",
              plain("steps", "steps")]
    if size["unit"] != "tokens":
        lines.append(plain("tokens seen", "tokens_seen"))
    if size["unit"] != "flops":
        lines.append(f"| training FLOPs | {fmt(roles['model']['flops_seen'])} | {fmt(roles['baseline']['flops_seen'])} "
                     "| | |")
    for row in size["rows"]:
        lines.append(f"| {row['metric']} | {cell(row['model'])} | {cell(row['baseline'])} | "
                     f"{cell(row['difference'])} | {row['verdict']} |")
    return lines


def multiplier_text(fit: dict[str, Any]) -> list[str]:
    if not fit["available"]:
        return [f"No compute multiplier: {fit['reason']}."]
    m, b = fit["model_fit"], fit["baseline_fit"]
    interval = ("no interval (too few distinct resamples)" if fit["low"] is None
                else f"95% CI [{fmt(fit['low'])}, {fmt(fit['high'])}] over {fit['replicates']} resamples of sizes "
                     f"and seeds")
    label = " (extrapolated beyond the baseline's trained budgets)" if fit["extrapolated"] else ""
    return [f"Fits of final {fit['metric']} against training FLOPs, L(C) = E + A * C^-alpha: model E = {fmt(m['E'])}, "
            f"A = {fmt(m['A'])}, alpha = {fmt(m['alpha'])}; baseline E = {fmt(b['E'])}, A = {fmt(b['A'])}, "
            f"alpha = {fmt(b['alpha'])}.", "",
            f"**Compute multiplier: {fmt(fit['multiplier'])}**{label}, {interval}: the baseline needs that many times "
            f"the model's {fmt(fit['budget'])} FLOPs to reach the model's loss there ({fmt(fit['model_loss'])}); "
            f"above 1 the model is the more compute-efficient."]


def summary(results: dict[str, Any]) -> list[str]:
    """What the numbers support, in words: verdict counts per size, and the multiplier."""
    lines = []
    for size in results["sizes"]:
        counts: dict[str, int] = {}
        for row in size["rows"]:
            counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
        told = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        lines.append(f"- size {size['index']} ({len(size['seeds'])} seed(s), budget {fmt(size['target'])} "
                     f"{UNIT_NAMES[size['unit']]}): {told}.")
    return lines


def render(results: dict[str, Any]) -> str:
    names = {r: results["sizes"][0]["roles"][r]["name"] for r in ROLES} if results["sizes"] else {}
    lines = [f"# seqlab compare: {names.get('model', '?')} vs {names.get('baseline', '?')}", "",
             f"Objective `{results['objective']}`; baseline matched by {results['match']}; every size trains both "
             f"models to the same {UNIT_NAMES[results['budget']]}; {len(results['sizes'])} size(s), seeds "
             f"{results['seeds']}.", "",
             "Cells: estimate [95% confidence interval]. Eval metrics: bootstrap over test items (and seeds); "
             "losses: bootstrap over seeds. Differences are paired (same seeds, same items); a verdict needs the "
             "whole interval of the difference on one side of zero.", "", "## What the numbers support", ""]
    lines += summary(results) + [""] + multiplier_text(results["fit"]) + [""]
    for size in results["sizes"]:
        lines += [f"## Size {size['index']}", ""] + size_table(size) + [""]
    lines += ["![validation loss against training FLOPs](loss_vs_flops.png)", "",
              "![eval metrics against training FLOPs](eval_vs_flops.png)", "",
              "Every number: [results.json](results.json). Resolved configs: [configs/](configs/).", ""]
    return "\n".join(lines)


def write_report(root: Path, reps: int = 2000) -> Path:
    """Analyse every finished job under `root` and write `root/report/`; returns report.md's path."""
    from seqlab.evaluation.plots import eval_plot, loss_plot  # matplotlib only when a report is written

    results = analyse(load_jobs(root, REPORT_DIR), reps)
    out = root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    loss_plot(results, out / "loss_vs_flops.png")
    eval_plot(results, out / "eval_vs_flops.png")
    (out / "configs").mkdir(exist_ok=True)
    for run in results["runs"]:
        config = Path(run["run_dir"]) / RESOLVED_CONFIG
        if config.is_file():
            shutil.copyfile(config, out / "configs" / f"size{run['size']}-seed{run['seed']}-{run['name']}.yaml")
    report = out / "report.md"
    report.write_text(render(results))
    return report
