"""Sharded checkpoint folders (one file per rank, torch distributed checkpoint) written whole or not at all.

Every rank writes into a hidden `.NAME.partial` folder; rank 0 seals it once all have (the fsdp2 strategy's
save_checkpoint calls `seal_sharded`): a completion marker lists each file and its size, then the folder is
renamed into place. `check_sharded` is what `resume=auto` checks.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
from pathlib import Path

from seqlab.errors import DataError, write_failure

PARTIAL_SUFFIX = ".partial"  # hidden `.NAME.partial` folders: sharded saves in progress, or cut short
OLD_SUFFIX = ".old"  # hidden `.NAME.old`: the sharded folder a new one with its name is replacing
COMPLETE = "seqlab.complete.json"  # written into a sharded folder once every rank's files are on disk
SHARDED_METADATA = ("meta.pt", ".metadata")  # Lightning's and torch distributed checkpoint's


def fsync_folder(folder: Path) -> None:
    """Make the folder's entries (a rename) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_error(err: BaseException, folder: Path) -> str | None:
    """Why a save into `folder` failed, when storage is the reason: `err`'s own OSError, or the first failing
    rank's in the CheckpointException that torch distributed checkpoint raises on every rank (its failures map
    ranks to (exception, traceback)). torch.save into a file object reports a failed write only as "unexpected
    pos"; its cause is then read from the file-size limit and the free space. None: not a storage error."""
    failures = getattr(err, "failures", None)
    causes = [failure[0] if isinstance(failure, tuple) else failure
              for _, failure in sorted(failures.items())] if isinstance(failures, dict) else [err]
    for cause in causes:
        if isinstance(cause, OSError):
            return write_failure(folder, cause).cause
    if not any(isinstance(cause, RuntimeError) and "unexpected pos" in str(cause) for cause in causes):
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"a write was cut short: File too large (EFBIG), the file-size limit (ulimit -f) is {limit} bytes"
    free = shutil.disk_usage(folder).free
    return f"a write was cut short: {free} bytes are free on the filesystem " + \
        ("(No space left on device, ENOSPC)" if free < 1 << 26 else "(a quota, or an I/O error)")


def partial_folder(path: Path) -> Path:
    """Where a sharded checkpoint is written before it is renamed to `path` (the same name on every rank)."""
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def seal_sharded(temp: Path, path: Path, world_size: int) -> None:
    """Rank 0, once every rank has written its files into `temp`: sync them, record each file's size in the
    completion marker, then move the folder to `path`. A folder replaced by it is moved aside first and
    removed last, so a kill at any point leaves a complete checkpoint under `path` or under `.NAME.old`,
    which the next `resume=auto` puts back (`remove_unfinished_saves`)."""
    files = {}
    for file in sorted(p for p in temp.rglob("*") if p.is_file()):
        with open(file, "rb+") as f:
            os.fsync(f.fileno())
        files[str(file.relative_to(temp))] = file.stat().st_size
    marker = temp / COMPLETE
    try:
        with open(marker, "w") as f:
            json.dump({"world_size": world_size, "files": files}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        old = path.with_name(f".{path.name}{OLD_SUFFIX}")
        if path.exists():
            remove(old)
            os.replace(path, old)
        os.replace(temp, path)
        fsync_folder(path.parent)
        remove(old)
    except OSError as err:
        raise write_failure(path, err) from None


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_sharded(path: Path) -> None:
    """A sharded folder is complete when its marker lists every file at its size (every rank's shards)."""
    marker = path / COMPLETE
    if not marker.is_file():
        missing = [name for name in SHARDED_METADATA if not (path / name).is_file()]
        if missing:
            raise DataError(f"checkpoint {path}: sharded checkpoint without {', '.join(missing)} (save cut short)")
        return  # written before completion markers: its metadata files are the only sign of completion
    try:
        listed = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"checkpoint {path}: unreadable {COMPLETE} ({err})") from None
    for name, size in listed.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            found = f"{file.stat().st_size} bytes" if file.is_file() else "missing"
            raise DataError(f"checkpoint {path}: shard file {name} is {found}, {COMPLETE} lists {size} bytes")
