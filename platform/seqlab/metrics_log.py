"""metrics.csv that survives kills: rows written as they are logged, and kept across a resume."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from seqlab.errors import write_failure
from seqlab.fault import write_text_atomically

TRAIN_ROW_KEY = "train/loss"  # logged by the module in every training row of the metrics


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger writing every row as it is logged, so a killed run loses none (see MetricsWriter)."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        super().__init__(run_dir, name="csv", version="", flush_logs_every_n_steps=1)
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = MetricsWriter(self.log_dir, self._resume_step)
        return self._experiment


class MetricsWriter(ExperimentWriter):
    """Lightning's metrics.csv writer, safe against kills at any moment.

    Lightning deletes the file of an earlier run in the same folder, and rewrites it in place when a new column
    appears. Here a run resumed after step c keeps the rows of the steps its checkpoint covers, and every
    rewrite goes through a temporary file and a rename."""

    def __init__(self, log_dir: str, resume_step: int | None):
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._resume_step is None or not path.is_file():
            return super()._check_log_dir_exists()
        kept = kept_rows(path, self._resume_step)
        self.metrics_keys = sorted({key for _, values in kept for key in values} | {"step"})
        _write_rows(path, self.metrics_keys, [{**values, "step": step} for step, values in kept])

    def save(self) -> None:
        """Append the rows logged since the last save. A failed write (a full disk) cuts the file back to its
        last complete row and raises WriteError: no half row is left for a resume to read."""
        path = Path(self.metrics_file_path)
        size = path.stat().st_size if path.is_file() else None
        try:
            super().save()
        except OSError as err:
            self.metrics = []
            try:
                os.truncate(path, size) if size is not None else path.unlink(missing_ok=True)
            except OSError:
                pass  # the rows before stay as they were; a resume drops a cut-short last row anyway
            raise write_failure(path, err) from None

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_rows(Path(self.metrics_file_path), fieldnames, rows)


def _write_rows(path: Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(path, text.getvalue())


def kept_rows(metrics: Path, resume_step: int) -> list[tuple[int, dict[str, str]]]:
    """The rows of `metrics` that a run resumed after step `resume_step` will not log again, as (step, values),
    the values as written (copied digit for digit).

    Lightning labels training rows with the steps completed (the module logs `step`), learning-rate and
    validation rows with the steps completed before the batch or validation they describe. So a run resumed
    after step c logs again every row labelled above c, and those labelled c except the training row."""
    text = metrics.read_text()
    if not text.endswith("\n"):  # the last row was cut short by the kill
        text = text[:text.rfind("\n") + 1]
    kept = []
    for row in csv.DictReader(io.StringIO(text)):
        values = {key: value for key, value in row.items() if key and value not in ("", None)}
        step = values.pop("step", "")
        if step.isdigit() and (int(step) < resume_step or (int(step) == resume_step and TRAIN_ROW_KEY in values)):
            kept.append((int(step), values))
    return kept
