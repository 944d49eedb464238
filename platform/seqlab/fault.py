"""Surviving kills: atomic checkpoint files and folders, and choosing the checkpoint to resume from.

A run killed at any point (SIGKILL, a lost node) and started again with the same command and `resume=auto`
continues from the newest checkpoint in its folder that passes every check and is this run's (see identity.py),
and logs the same losses as a run that was never interrupted (metrics_log.py keeps its rows).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from seqlab.errors import DataError, write_failure
from seqlab.identity import identity_differences, saved_identity
from seqlab.sharded import OLD_SUFFIX, PARTIAL_SUFFIX, SHARDED_METADATA, check_sharded, fsync_folder, remove

AUTO = "auto"
CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints, under its run directory
LAST = "last.ckpt"
TEMP_SUFFIX = ".tmp"  # hidden `.NAME.PID.tmp` files: saves in progress, or cut short by a kill
# What Lightning needs to resume training; a file without them holds weights only.
REQUIRED_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step", "callbacks")
WORLD_SIZE_KEY = "seqlab_world_size"  # ranks that wrote the checkpoint (the global batch is theirs x batch)


class _Recorder:
    """A file's write() that remembers the OSError it raised: torch.save reports a failed write only as "unexpected
    pos", and the cause (a full disk, a quota) is what the user needs to read."""

    def __init__(self, f: Any):
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a hidden temporary file beside its final name, syncs it to disk, then renames it:
    readers, and a run killed mid-save, only ever see the previous complete file or the new complete file. A
    failed write (ENOSPC, EDQUOT, EIO) removes the temporary file and raises WriteError naming file and cause.

    Lightning's own writer serialises into memory and moves the bytes from the system temp folder, which is a
    copy rather than an atomic rename when that folder is on another filesystem, and it never syncs."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):  # object storage: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        temp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
        recorder = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as f:
                recorder = _Recorder(f)
                torch.save(checkpoint, recorder)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
            fsync_folder(path.parent)
        except (OSError, RuntimeError) as err:
            temp.unlink(missing_ok=True)
            cause = recorder.error if recorder is not None and recorder.error is not None else err
            if isinstance(err, RuntimeError) and cause is err:
                raise  # not a write failure
            raise write_failure(path, cause) from None
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def write_text_atomically(path: Path, text: str, append: bool = False) -> Path:
    """Write (or append to) a small text file through a temporary file and a rename; WriteError on failure."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        before = path.read_text(encoding="utf-8") if append and path.is_file() else ""
        temp.write_text(before + text, encoding="utf-8")
        os.replace(temp, path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise write_failure(path, err) from None
    return path


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int  # optimizer steps completed
    identity: dict = field(default_factory=dict, compare=False)  # see identity.saved_identity
    config: dict | None = field(default=None, compare=False)  # the resolved config of the run that wrote it
    world_size: int | None = field(default=None, compare=False)  # None: not recorded (older checkpoints)


def inspect_checkpoint(path: Path, thorough: bool = True) -> Checkpoint:
    """The checkpoint at `path` if training can resume from it, else DataError saying why not.

    Loading is `weights_only` (no code from the file runs) and memory-mapped (tensors are read only when
    touched). `thorough` also verifies every record's CRC, and that the weights are finite: a diverging update
    may have been saved before its NaN showed in a loss. A sharded checkpoint (a folder) must hold every file
    its completion marker lists, at the listed size."""
    path = Path(path)
    try:
        if path.is_dir():
            check_sharded(path)
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
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    world = ckpt.get(WORLD_SIZE_KEY)
    return Checkpoint(path, int(ckpt["global_step"]), saved_identity(ckpt), config if isinstance(config, dict)
                      else None, int(world) if isinstance(world, int) else None)


def foreign(checkpoint: Checkpoint, identity: dict | None) -> str | None:
    """Why `checkpoint` is another run's (its identity differs from `identity`), or None."""
    if identity is None:
        return None
    differences = identity_differences(checkpoint.identity, identity)
    if not differences:
        return None
    return f"checkpoint {checkpoint.path} was written by another run: {'; '.join(differences)}"


def latest_checkpoint(folder: Path, identity: dict | None = None,
                      foreign_paths: list[Path] | None = None) -> Checkpoint | None:
    """The newest checkpoint in `folder` that passes `inspect_checkpoint` and, given the run's identity, is
    this run's; each one skipped is warned about, with the reason, and those of other runs are appended to
    `foreign_paths`."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix != ".ckpt":
            continue
        try:
            checkpoint = inspect_checkpoint(path, thorough=False)
        except DataError as err:
            rank_zero_warn(f"skipping {err}")
            continue
        why = foreign(checkpoint, identity)
        if why is not None:
            rank_zero_warn(f"skipping {why}")
            if foreign_paths is not None:
                foreign_paths.append(path)
            continue
        found.append(checkpoint)
    # Newest first; at equal steps the step-named file, as last.ckpt is rewritten by the next save.
    for checkpoint in sorted(found, key=lambda c: (c.step, c.path.name != LAST), reverse=True):
        try:
            inspect_checkpoint(checkpoint.path)
            return checkpoint
        except DataError as err:
            rank_zero_warn(f"skipping {err}")
    return None


@rank_zero_only
def remove_unfinished_saves(folder: Path) -> None:
    """Remove the files and folders of saves a kill cut short; put back a sharded folder caught mid-swap."""
    for old in folder.glob(f".*{OLD_SUFFIX}"):
        final = folder / old.name[1:-len(OLD_SUFFIX)]
        if final.exists():
            remove(old)
        else:
            rank_zero_warn(f"restoring {final} from {old}: the save replacing it was cut short")
            os.replace(old, final)
    for temp in [*folder.glob(f".*{TEMP_SUFFIX}"), *folder.glob(f".*{PARTIAL_SUFFIX}")]:
        rank_zero_warn(f"removing {temp}: a checkpoint save that was cut short")
        remove(temp)


def resolve_resume(resume: str | None, run_dir: Path, identity: dict | None = None) -> Checkpoint | None:
    """What `resume` starts from: None (nothing), `auto` (the newest valid checkpoint of this run directory
    that is this run's, None when there is none yet) or a checkpoint path, which must pass `inspect_checkpoint`
    and be this run's."""
    if resume is None:
        return None
    if resume != AUTO:
        try:
            checkpoint = inspect_checkpoint(Path(resume))
        except DataError as err:
            raise DataError(f"resume={resume}: cannot resume from it: {err}") from None
        why = foreign(checkpoint, identity)
        if why is not None:
            raise DataError(f"resume={resume}: cannot resume from it: {why}. To start from its weights only, "
                            "use architecture.init_from.path instead")
        return checkpoint
    folder = run_dir / CHECKPOINTS
    found, others = None, []
    if folder.is_dir():
        remove_unfinished_saves(folder)
        found = latest_checkpoint(folder, identity, others)
    if found is None and others:
        # Starting afresh here would overwrite the other run's step files with this run's.
        raise DataError(f"resume=auto: every checkpoint in {folder} that loads is another run's "
                        f"({', '.join(p.name for p in others)}; the warnings above say how they differ). Use another "
                        "hydra.run.dir for this run, or move them away")
    if found is None:
        rank_zero_info(f"resume=auto: no valid checkpoint in {folder}; starting from the beginning")
    else:
        rank_zero_info(f"resume=auto: resuming from {found.path} (step {found.step})")
    return found
