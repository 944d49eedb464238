"""Killing `seqlab train` with SIGKILL and running the same command again: the run continues from its newest
valid checkpoint and its metrics.csv holds exactly what an uninterrupted run logs.

The model has dropout and the objective is the paper's mixture (denoising noise, mixture choices), so the
sampler position, the noise, the model's randomness, the schedule and the optimizer all have to be restored
for the losses to match to the last digit.
"""
import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

OVERRIDES = ("trainer=smoke", "trainer.max_steps=12", "trainer.checkpoint_every_n_steps=4",
             "trainer.keep_last_checkpoints=2", "trainer.val_check_interval=5", "trainer.deterministic=true",
             "data.val_batches=1", "architecture.dropout=0.1", "resume=auto")
TIMING_COLUMNS = ("train/tokens_per_s", "train/target_tokens_per_s", "train/mfu")  # wall-clock: differ between runs


def _command(run_dir: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "seqlab", "train", *OVERRIDES, f"hydra.run.dir={run_dir}", f"cache_dir={cache}"]


def _table(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without the timing columns; tolerant of a file being written."""
    try:
        text = (run_dir / "csv" / "metrics.csv").read_text()
    except FileNotFoundError:
        return []
    text = text[:text.rfind("\n") + 1]
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(io.StringIO(text))]


def _train_steps(run_dir: Path) -> set[int]:
    return {int(row["step"]) for row in _table(run_dir) if row.get("train/loss")}


def _run(run_dir: Path, cache: Path, log: Path, kill_when=None) -> int:
    """Run the command; SIGKILL it as soon as `kill_when()` holds. Returns its exit status."""
    env = {**os.environ, "PYTHONPATH": ""}
    with open(log, "w") as out:
        process = subprocess.Popen(_command(run_dir, cache), cwd=run_dir.parent, stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if kill_when is not None and kill_when():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        else:
            if process.poll() is None:
                process.kill()
        return process.wait()


def _resumed_from(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        if "resume=auto: resuming from" in line:
            return int(line.rsplit("(step ", 1)[1].rstrip(")"))
    return None


@pytest.mark.slow
def test_killed_three_times_the_run_logs_exactly_the_uninterrupted_run(tmp_path):
    cache = tmp_path / "cache"
    reference = tmp_path / "reference"
    assert _run(reference, cache, tmp_path / "reference.log") == 0, (tmp_path / "reference.log").read_text()[-3000:]
    expected = _table(reference)
    assert sorted(int(r["step"]) for r in expected if r.get("train/loss")) == list(range(1, 13))

    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    kills = [
        # Right after a checkpoint: step 4's row is logged just after its checkpoint is written.
        ("after checkpoint 4", lambda: 4 in _train_steps(run)),
        # Between checkpoints: steps 9 and 10 are done, and lost.
        ("between checkpoints 8 and 12", lambda: 10 in _train_steps(run)),
        # During a save: the temporary file of checkpoint 12 exists until its rename.
        ("while saving checkpoint 12", lambda: any(checkpoints.glob(".step0000012.ckpt.*.tmp"))),
    ]
    for attempt, (point, condition) in enumerate(kills):
        log = tmp_path / f"attempt{attempt}.log"
        status = _run(run, cache, log, kill_when=condition)
        if attempt < 2:  # these points are many steps before the end: the kill always lands
            assert status == -signal.SIGKILL, f"{point}: exit status {status}\n{log.read_text()[-3000:]}"
        if attempt > 0:
            assert _resumed_from(log) is not None, f"{point}: did not resume\n{log.read_text()[-3000:]}"
    final = tmp_path / "final.log"
    assert _run(run, cache, final) == 0, final.read_text()[-3000:]
    # A kill that caught checkpoint 12 mid-save leaves its temporary file, removed at the restart, and the run
    # resumes from checkpoint 8; a kill just after its rename (while last.ckpt is written) resumes from 12.
    cut_short = re.search(r"removing \S+/\.step0000012\.ckpt\.\d+\.tmp: a checkpoint save that was cut short",
                          final.read_text())
    assert _resumed_from(final) == (8 if cut_short else 12), final.read_text()[-3000:]

    # Row for row, the same table: losses per objective, tokens seen, learning rates, validation.
    assert _table(run) == expected
    assert not list(checkpoints.glob(".*.tmp")), "an unfinished save was left behind"
    assert {p.name for p in checkpoints.iterdir()} == {"last.ckpt", "step0000008.ckpt", "step0000012.ckpt"}
