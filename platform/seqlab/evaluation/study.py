"""The numbers of a `seqlab compare` study, from its finished jobs: intervals, paired differences, verdicts,
the loss-against-compute fits and the compute multiplier. The report renders exactly what this returns.

Pairing: at one size, the model and the baseline of one seed trained on the same data stream and were
evaluated on the same items, so differences are bootstrapped on the same resamples of seeds and items.
Validation losses vary only over seeds (the validation batches are fixed); eval metrics vary over seeds and
items (a hierarchical bootstrap, see `stats`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from seqlab.evaluation.aggregates import score_from_sums
from seqlab.evaluation.scaling import compute_multiplier
from seqlab.evaluation.stats import Interval, bootstrap, paired_bootstrap, paired_seed_interval, seed_interval, verdict

ROLES = ("model", "baseline")
FIT_METRIC = "val/loss"
ONE_SEED = "one seed: no interval"


def _interval(x: Interval) -> dict[str, float]:
    return x.to_dict()


def _loss_row(metric: str, values: dict[str, list[float]], reps: int) -> dict[str, Any]:
    a, b = (np.array(values[r]) for r in ROLES)
    row = {"metric": metric, "kind": "loss", "higher_is_better": False, "seeds": len(a),
           "model": _interval(seed_interval(a, reps=reps)), "baseline": _interval(seed_interval(b, reps=reps))}
    diff = paired_seed_interval(a, b, reps=reps)
    row["difference"] = _interval(diff)
    row["verdict"] = verdict(diff, higher_is_better=False) if len(a) > 1 else ONE_SEED
    return row


def _read_stats(eval_dir: str, task: str, metric: str) -> tuple[list[str], np.ndarray]:
    ids, stats = [], []
    with open(Path(eval_dir) / f"{task}.predictions.jsonl", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            ids.append(str(record["id"]))
            stats.append(record["stats"][metric])
    return ids, np.asarray(stats, dtype=np.float64)  # (n, k)


def _eval_row(task: str, metric: str, runs: dict[str, list[dict]], reps: int) -> dict[str, Any] | None:
    """One eval metric at one size: per-role intervals over seeds and items, the paired difference."""
    scores = json.loads((Path(runs["model"][0]["eval_dir"]) / "scores.json").read_text())
    aggregate = scores["aggregates"][task][metric]
    higher = scores["higher_is_better"][task][metric]
    stats: dict[str, np.ndarray] = {}
    reference_ids = None
    for role in ROLES:
        per_seed = []
        for run in runs[role]:
            ids, s = _read_stats(run["eval_dir"], task, metric)
            if reference_ids is None:
                reference_ids = ids
            if ids != reference_ids:
                raise ValueError(f"{run['eval_dir']}/{task}.predictions.jsonl: the items differ from the other "
                                 "runs' at this size; every run must be evaluated on the same items")
            per_seed.append(s)
        stats[role] = np.stack(per_seed)  # (S, n, k)

    def score(sums: np.ndarray) -> np.ndarray:
        return score_from_sums(aggregate, sums)

    diff = paired_bootstrap(stats["model"], stats["baseline"], score, reps=reps)
    return {"metric": f"{task} {metric}", "kind": "eval", "task": task, "name": metric, "higher_is_better": higher,
            "seeds": int(stats["model"].shape[0]), "items": int(stats["model"].shape[1]),
            "model": _interval(bootstrap(stats["model"], score, reps=reps)),
            "baseline": _interval(bootstrap(stats["baseline"], score, reps=reps)),
            "difference": _interval(diff), "verdict": verdict(diff, higher_is_better=higher)}


def _flat_runs(jobs: Sequence[dict]) -> list[dict]:
    runs = []
    for job in jobs:
        for size in job["sizes"]:
            for name, run in size["runs"].items():
                runs.append({"size": size["index"], "size_config": size["size"], "seed": job["seed"],
                             "name": name, "unit": size["unit"], "target": size["target"], **run})
    return runs


def analyse(jobs: Sequence[dict], reps: int = 2000) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-ready data."""
    if not jobs:
        raise ValueError("no finished compare jobs (results.json) to report on")
    runs = _flat_runs(jobs)
    sizes_out = []
    for index in sorted({r["size"] for r in runs}):
        at = {role: sorted((r for r in runs if r["size"] == index and r["role"] == role), key=lambda r: r["seed"])
              for role in ROLES}
        seeds = sorted({r["seed"] for r in at["model"]} & {r["seed"] for r in at["baseline"]})
        at = {role: [r for r in at[role] if r["seed"] in seeds] for role in ROLES}  # complete pairs only
        if not seeds:
            continue
        roles = {}
        for role in ROLES:
            first = at[role][0]
            realised = [r["flops_seen"] if r["unit"] == "flops" else r["tokens_seen"] if r["unit"] == "tokens"
                        else r["steps"] for r in at[role]]
            roles[role] = {"name": first["name"], "parameters": first["parameters"],
                           "non_embedding_parameters": first["non_embedding_parameters"],
                           "steps": float(np.mean([r["steps"] for r in at[role]])),
                           "flops_seen": float(np.mean([r["flops_seen"] for r in at[role]])),
                           "tokens_seen": float(np.mean([r["tokens_seen"] for r in at[role]])),
                           "realised": float(np.mean(realised)),
                           "budget_deviation": float(max(abs(v / r["target"] - 1) for v, r in zip(realised, at[role])))}
        losses = sorted(set(at["model"][0]["val_final"]) & set(at["baseline"][0]["val_final"]))
        rows = [_loss_row(f"final {k}", {role: [r["val_final"][k] for r in at[role]] for role in ROLES}, reps)
                for k in losses]
        evals = at["model"][0].get("eval") or {}
        for task in sorted(evals):
            for metric in sorted(k for k in evals[task] if k not in ("examples", "truncated")):
                rows.append(_eval_row(task, metric, at, reps))
        sizes_out.append({"index": index, "size": at["model"][0].get("size_config"), "seeds": seeds,
                          "unit": at["model"][0]["unit"], "target": float(np.mean([r["target"] for r in at["model"]])),
                          "roles": roles, "rows": rows})
    return {"budget": jobs[0]["budget"], "objective": jobs[0]["objective"], "match": jobs[0]["match"],
            "seeds": sorted({job["seed"] for job in jobs}), "sizes": sizes_out, "fit": fit(runs, reps),
            "runs": runs}


def fit(runs: Sequence[dict], reps: int) -> dict[str, Any]:
    """L(C) = E + A C^-alpha per role over every (size, seed) run's final validation, and the compute
    multiplier."""
    # The final loss is the last validation's, so its compute is the FLOPs spent by then (the end of training,
    # unless a run's steps allowed no interval that divides them).
    points = {role: {(r["size"], r["seed"]): (r["curves"]["flops"][-1], r["val_final"].get(FIT_METRIC)) for r in runs
                     if r["role"] == role and r["val_final"].get(FIT_METRIC) is not None} for role in ROLES}
    keys = sorted(set(points["model"]) & set(points["baseline"]))
    sizes = {k[0] for k in keys}
    if len(sizes) < 3:
        return {"metric": FIT_METRIC, "available": False,
                "reason": f"a fit of E + A C^-alpha needs at least 3 sizes; this study has {len(sizes)}"}
    model = [(k, *points["model"][k]) for k in keys]
    baseline = [(k, *points["baseline"][k]) for k in keys]
    return {"metric": FIT_METRIC, "available": True, **compute_multiplier(model, baseline, reps=max(200, reps // 2))}
