"""Surviving kills: atomic checkpoint files, choosing the checkpoint to resume from, metrics that continue.

A run killed at any point (SIGKILL, a lost node) and started again with the same command and `resume=auto`
continues from the newest checkpoint in its folder that passes every check, and logs the same losses as a run
that was never interrupted.
"""
from __future__ import annotations

import csv
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from seqlab.errors import DataError

AUTO = "auto"
CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints, under its run directory
LAST = "last.ckpt"
TEMP_SUFFIX = ".tmp"  # hidden `.NAME.PID.tmp` files: saves in progress, or cut short by a kill
# What Lightning needs to resume training; a file without them holds weights only.
REQUIRED_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step", "callbacks")
SHARDED_METADATA = ("meta.pt", ".metadata")  # Lightning's and torch distributed checkpoint's, written last
TRAIN_ROW_KEY = "train/loss"  # logged by the module in every training row of the metrics


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a hidden temporary file beside its final name, syncs it to disk, then renames it:
    readers, and a run killed mid-save, only ever see the previous complete file or the new complete file.

    Lightning's own writer serialises into memory and moves the bytes from the system temp folder, which is a
    copy rather than an atomic rename when that folder is on another filesystem, and it never syncs."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):  # object storage: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
        try:
            with open(temp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        # The rename is durable only once the folder's entry is on disk too.
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int  # optimizer steps completed


def inspect_checkpoint(path: Path, thorough: bool = True) -> Checkpoint:
    """The checkpoint at `path` if training can resume from it, else DataError saying why not.

    Loading is `weights_only` (no code from the file runs) and memory-mapped (tensors are read only when
    touched). `thorough` also verifies every record's CRC, and that the weights are finite: a diverging update
    may have been saved before its NaN showed in a loss. A sharded checkpoint (a folder) is checked for the
    metadata files written after all shards."""
    path = Path(path)
    try:
        if path.is_dir():
            missing = [name for name in SHARDED_METADATA if not (path / name).is_file()]
            if missing:
                raise DataError(f"checkpoint {path}: sharded checkpoint without {', '.join(missing)} (save cut short)")
            ckpt = torch.load(path / SHARDED_METADATA[0], map_location="cpu", weights_only=True)
            required = [key for key in REQUIRED_KEYS if key not in ("state_dict", "optimizer_states")]
        else:
            if thorough:
                with zipfile.ZipFile(path) as archive:
                    corrupt = archive.testzip()
                if corrupt is not None:
                    raise DataError(f"checkpoint {path}: record {corrupt} fails its checksum (corrupt file)")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            required = list(REQUIRED_KEYS)
    except (OSError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise DataError(f"checkpoint {path}: not loadable ({str(err).splitlines()[0]})") from None
    missing = [key for key in required if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise DataError(f"checkpoint {path}: lacks {', '.join(missing)}; it cannot resume training")
    if thorough and not path.is_dir():
        bad = [name for name, t in ckpt["state_dict"].items()
               if isinstance(t, torch.Tensor) and t.is_floating_point() and not t.isfinite().all()]
        if bad:
            raise DataError(f"checkpoint {path}: non-finite weights in {', '.join(bad[:3])}")
    return Checkpoint(path, int(ckpt["global_step"]))


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest checkpoint in `folder` that passes `inspect_checkpoint`; each one skipped is warned about."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix != ".ckpt":
            continue
        try:
            found.append(inspect_checkpoint(path, thorough=False))
        except DataError as err:
            rank_zero_warn(f"skipping {err}")
    # Newest first; at equal steps the step-named file, as last.ckpt is rewritten by the next save.
    for checkpoint in sorted(found, key=lambda c: (c.step, c.path.name != LAST), reverse=True):
        try:
            return inspect_checkpoint(checkpoint.path)
        except DataError as err:
            rank_zero_warn(f"skipping {err}")
    return None


@rank_zero_only
def remove_unfinished_saves(folder: Path) -> None:
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        rank_zero_warn(f"removing {temp}: a checkpoint save that was cut short")
        temp.unlink(missing_ok=True)


def resolve_resume(resume: str | None, run_dir: Path) -> Checkpoint | None:
    """What `resume` starts from: None (nothing), `auto` (the newest valid checkpoint of this run directory,
    None when there is none yet) or a checkpoint path, which must pass `inspect_checkpoint`."""
    if resume is None:
        return None
    if resume != AUTO:
        try:
            return inspect_checkpoint(Path(resume))
        except DataError as err:
            raise DataError(f"resume={resume}: cannot resume from it: {err}") from None
    folder = run_dir / CHECKPOINTS
    found = None
    if folder.is_dir():
        remove_unfinished_saves(folder)
        found = latest_checkpoint(folder)
    if found is None:
        rank_zero_info(f"resume=auto: no valid checkpoint in {folder}; starting from the beginning")
    else:
        rank_zero_info(f"resume=auto: resuming from {found.path} (step {found.step})")
    return found


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

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        _write_rows(Path(self.metrics_file_path), fieldnames, rows)


def _write_rows(path: Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    temp = path.with_name(f".{path.name}{TEMP_SUFFIX}")
    with open(temp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temp, path)


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
