"""Planning a preparation: the list of file parts to encode, in output order, and their split across jobs.

The plan depends only on the inputs and the options, never on how many jobs run it: a file larger than
`part_bytes` is always cut into the same parts (byte ranges of an uncompressed line file, runs of row groups of
a parquet file; a compressed stream cannot be entered in the middle and stays whole). So one job, or N jobs
each taking the parts `assign` gives them, encode the very same parts, and merging gives the same bytes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from seqlab.data.corpus import CorpusFile, CorpusReport, find_files, is_valid_name
from seqlab.data.formats import corruption_errors, parquet_row_groups, stem
from seqlab.errors import ConfigError

PART_BYTES = 512 << 20  # large enough that a part's fixed costs vanish, small enough to spread a big file


@dataclass(frozen=True)
class FileTask:
    """One input file or part of one, numbered in output order; its part files go to parts_dir/<index>/"""

    index: int
    source: str
    file: CorpusFile
    size: int  # bytes to read, for progress and for balancing jobs

    def to_dict(self) -> dict[str, Any]:
        file = self.file
        return {"index": self.index, "source": self.source, "path": str(file.path), "lang": file.lang,
                "format": file.format, "compression": file.compression, "text_field": file.text_field,
                "lang_field": file.lang_field, "span": list(file.span) if file.span else None, "size": self.size}

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> FileTask:
        span = tuple(entry["span"]) if entry["span"] is not None else None
        file = CorpusFile(Path(entry["path"]), entry["lang"], entry["format"], entry["compression"],
                          entry["text_field"], entry["lang_field"], span)
        return cls(entry["index"], entry["source"], file, entry["size"])


def plan_tasks(inputs: Sequence[str | Path], source: str | None, lang: str | None, out_dir: Path, *,
               text_field: str = "text", lang_field: str = "lang",
               part_bytes: int = PART_BYTES) -> tuple[list[FileTask], CorpusReport]:
    """Validate inputs and list every file part to encode, ordered by (source, path, part) as in the output."""
    if not inputs:
        raise ConfigError("inputs=[]: give at least one corpus file or folder")
    if source is not None and not is_valid_name(source):
        raise ConfigError(f"source={source!r} must be a name such as 'web' or 'flores' (letters, digits, _ . + -)")
    if type(part_bytes) is not int or part_bytes < 1:
        raise ConfigError(f"part_bytes={part_bytes!r}: must be a positive integer")
    for flag, field in (("--text-field", text_field), ("--lang-field", lang_field)):
        if not isinstance(field, str) or not field:
            raise ConfigError(f"{flag}={field!r}: must name a field")
    report = CorpusReport()
    named: dict[str, Path] = {}
    files: list[tuple[str, CorpusFile]] = []
    for path in map(Path, inputs):
        if out_dir.resolve() in (path.resolve(), *path.resolve().parents):
            raise ConfigError(f"output {out_dir} would overwrite input {path}")
        name = source or (stem(path) if path.is_file() else path.name)
        if not is_valid_name(name):
            raise ConfigError(f"source name {name!r} taken from input {path} is not valid; pass --source NAME")
        if source is None and name in named:
            raise ConfigError(f"inputs {named[name]} and {path} both give source name {name!r}; "
                              "rename one or pass --source to merge them")
        named[name] = path
        files += [(name, file) for file in find_files(path, report, lang, text_field, lang_field)]
    ordered = sorted(files, key=lambda item: (item[0], str(item[1].path)))
    if len({file.path.resolve() for _, file in ordered}) != len(ordered):
        raise ConfigError(f"inputs {[str(p) for p in inputs]} name some files twice; "
                          "their documents would be stored twice")
    tasks: list[FileTask] = []
    for name, file in ordered:
        for part, size in _parts(file, part_bytes):
            tasks.append(FileTask(len(tasks), name, part, size))
    return tasks, report


def _parts(file: CorpusFile, part_bytes: int) -> list[tuple[CorpusFile, int]]:
    size = _size(file.path)
    if size <= part_bytes or file.compression is not None or file.format == "arrow":
        return [(file, size)]
    if file.format == "parquet":
        try:
            groups = parquet_row_groups(file.path)
        except (OSError, *corruption_errors()):
            return [(file, size)]  # a broken footer: reading the file whole counts it as corrupt
        parts, first, total = [], 0, 0
        for i, group in enumerate(groups):
            total += group
            if total >= part_bytes or i == len(groups) - 1:
                parts.append((file._replace(span=(first, i + 1)), total))
                first, total = i + 1, 0
        return parts if len(parts) > 1 else [(file, size)]
    return [(file._replace(span=(start, min(start + part_bytes, size))), min(part_bytes, size - start))
            for start in range(0, size, part_bytes)]


def _size(path: Path) -> int:
    try:
        if path.is_dir():  # a datasets folder
            return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0  # unreadable; reading it counts it


def assign(tasks: Sequence[FileTask], num_shards: int) -> list[list[int]]:
    """The task indices of each of `num_shards` jobs: largest part first to the least loaded job (ties to the
    lowest job), so jobs get about equal bytes; deterministic for a plan."""
    loads = [0] * num_shards
    jobs: list[list[int]] = [[] for _ in range(num_shards)]
    for task in sorted(tasks, key=lambda t: (-t.size, t.index)):
        job = min(range(num_shards), key=lambda j: (loads[j], j))
        jobs[job].append(task.index)
        loads[job] += task.size
    return [sorted(job) for job in jobs]


def plan_digest(tasks: Sequence[FileTask], options: dict[str, Any]) -> str:
    """Identifies a plan with the options that change its output, so parts of different plans never merge."""
    text = json.dumps({"tasks": [t.to_dict() for t in tasks], "options": options}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
