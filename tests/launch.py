"""Launching `seqlab train` as a job a cluster would run, and interrupting it: `from launch import ...`.

Each launch is its own process group (as a scheduler starts a job), so a kill can take the whole group: rank 0
and the ranks Lightning started from it.
"""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

# Wall-clock columns: they differ between any two runs.
TIMING_COLUMNS = ("train/tokens_per_s", "train/target_tokens_per_s", "train/mfu")


def train_command(run_dir: Path, cache: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "seqlab", "train", *overrides, f"hydra.run.dir={run_dir}", f"cache_dir={cache}"]


def metrics_table(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without the timing columns; tolerant of a file being written."""
    try:
        text = (run_dir / "csv" / "metrics.csv").read_text()
    except FileNotFoundError:
        return []
    text = text[:text.rfind("\n") + 1]
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(io.StringIO(text))]


def train_steps(run_dir: Path) -> set[int]:
    """The steps whose training rows are in metrics.csv."""
    return {int(row["step"]) for row in metrics_table(run_dir) if row.get("train/loss")}


def train_losses(run_dir: Path) -> dict[int, float]:
    return {int(row["step"]): float(row["train/loss"]) for row in metrics_table(run_dir) if row.get("train/loss")}


def launch(command: list[str], log: Path, interrupt_when: Callable[[], bool] | None = None,
           sig: int = signal.SIGKILL, group: bool = False, timeout: float = 300) -> int:
    """Run `command` (output to `log`); send `sig` once `interrupt_when()` holds, to rank 0 only or to the whole
    process group; wait for the end. Returns rank 0's exit status (negative: killed by that signal)."""
    env = {**os.environ, "PYTHONPATH": ""}
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if interrupt_when is not None and interrupt_when():
                    if group:
                        os.killpg(process.pid, sig)
                    else:
                        process.send_signal(sig)
                    interrupt_when = None
                time.sleep(0.002)
            return process.wait(timeout=max(deadline - time.monotonic(), 1))
        finally:
            # Nothing of the job may outlive it: a rank left behind would hold the port and the CPU.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def resumed_from(log: Path) -> int | None:
    """The step `resume=auto` continued from, as the log says."""
    for line in log.read_text().splitlines():
        if "resume=auto: resuming from" in line:
            return int(line.rsplit("(step ", 1)[1].rstrip(")"))
    return None


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text()[-chars:]
