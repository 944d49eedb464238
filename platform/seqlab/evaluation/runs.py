"""What a finished run logged, as `seqlab compare` and `seqlab report` read it: final validation losses,
realised budget, and validation curves against steps, tokens and FLOPs, all from the run's metrics.csv."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = "results.json"  # one per compare job
VAL_PREFIX = "val/loss"


def read_metrics(path: Path) -> dict[str, Any]:
    """A run's metrics.csv -> final validation losses, tokens and FLOPs seen, and the validation curves.

    Validation rows carry Lightning's step index (steps completed - 1); training rows carry the steps
    completed. Tokens and FLOPs at a validation are read from the training row of the same step (compare
    runs log on every validation step), interpolated between logged steps otherwise.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r.get("train/tokens_seen")]
    val_rows = [r for r in rows if r.get(VAL_PREFIX)]
    names = sorted(k for k in (val_rows[0] if val_rows else {}) if k.startswith(VAL_PREFIX))
    steps = np.array([float(r["step"]) + 1 for r in val_rows])
    logged = np.array([float(r["step"]) for r in train]) if train else np.zeros(1)

    def at_validations(key: str) -> tuple[np.ndarray, float]:
        values = np.array([float(r[key]) if r.get(key) else np.nan for r in train]) if train else np.zeros(1)
        return np.interp(steps, logged, values), float(values[-1])

    tokens, tokens_seen = at_validations("train/tokens_seen")
    flops, flops_seen = at_validations("train/flops_seen")
    curves = {"step": steps.tolist(), "tokens": tokens.tolist(), "flops": flops.tolist()}
    curves.update({name: [float(r[name]) for r in val_rows] for name in names})
    return {"tokens_seen": tokens_seen, "flops_seen": flops_seen,
            "val_final": {name: curves[name][-1] for name in names}, "curves": curves}


def load_jobs(root: Path, report_dir: str = "report") -> list[dict]:
    """Every compare job's results under `root` (a job folder or a sweep folder, at any depth), in path order;
    the report's own results.json (under `report_dir`) is not a job."""
    paths = sorted(p for p in root.rglob(RESULTS) if report_dir not in p.relative_to(root).parts)
    return [json.loads(p.read_text()) for p in paths]
