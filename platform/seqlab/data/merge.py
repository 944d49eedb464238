"""Joining encoded parts into a prepared corpus: filtering, concatenation, manifest; and `seqlab data merge`.

A single `seqlab data prepare` and the merge of the part folders of N sharded jobs both end in `finalize`,
over the same parts in the same order, so their outputs are the same bytes (manifest's `created` aside, which
follows SOURCE_DATE_EPOCH where set). A part folder holds:

    PART/part.json                       the plan, its digest, the job's shard index and its parts' reports
    PART/parts/<task>/<lang>.bin         token ids of the part's documents of that language
    PART/parts/<task>/<lang>.len.npy     their lengths
    PART/parts/<task>/<lang>.meta.npy    their filter rows (seqlab.data.filters.DOC_META)
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from seqlab.data.corpus import CorpusReport
from seqlab.data.filters import removal_counts, select
from seqlab.data.plan import FileTask
from seqlab.data.store import PreparedCorpus, write_manifest, write_shard
from seqlab.errors import DataError

PART_FORMAT = "seqlab-prepare-part/1"
PART_MANIFEST = "part.json"
REMOVED = "removed.jsonl"  # one line per document left out by the filters, with the reason


@dataclass(frozen=True)
class FileResult:
    index: int
    report: CorpusReport
    langs: tuple[str, ...]  # the languages it wrote parts for: parts_dir/<index>/<lang>.{bin,len.npy,meta.npy}


def part_folder(parts_dir: Path, index: int) -> Path:
    return parts_dir / f"{index:07d}"


def write_part_folder(root: Path, digest: str, num_shards: int, shard_index: int, tasks: Sequence[FileTask],
                      plan_report: CorpusReport, options: dict[str, Any], results: Sequence[FileResult]) -> None:
    part = {"format": PART_FORMAT, "plan": digest, "num_shards": num_shards, "shard_index": shard_index,
            "tasks": [task.to_dict() for task in tasks], "plan_report": plan_report.to_dict(), "options": options,
            "results": [{"index": r.index, "report": r.report.to_dict(), "langs": list(r.langs)} for r in results]}
    root.mkdir(parents=True, exist_ok=True)
    (root / PART_MANIFEST).write_text(json.dumps(part, ensure_ascii=False) + "\n", encoding="utf-8")


def merge_parts(part_dirs: Sequence[str | Path], out_dir: str | Path, *, overwrite: bool = False,
                progress: bool = True) -> PreparedCorpus:
    """Join the part folders of every job of one sharded preparation into a prepared corpus at `out_dir`."""
    if not part_dirs:
        raise DataError("seqlab data merge: give the part folder of every job")
    parts = [(Path(p), _read_part(Path(p))) for p in part_dirs]
    first_dir, first = parts[0]
    for path, part in parts[1:]:
        if part["plan"] != first["plan"]:
            raise DataError(f"{path / PART_MANIFEST}: prepared with another plan than {first_dir} (other inputs, "
                            "tokenizer or options); every job must run the same `seqlab data prepare` command")
    indices = sorted(part["shard_index"] for _, part in parts)
    if indices != list(range(first["num_shards"])):
        missing = sorted(set(range(first["num_shards"])) - set(indices))
        repeated = sorted({i for i in indices if indices.count(i) > 1})
        raise DataError(f"seqlab data merge: the plan has {first['num_shards']} shards; missing shard indices "
                        f"{missing}, repeated {repeated}")
    tasks = [FileTask.from_dict(entry) for entry in first["tasks"]]
    results = {}
    for path, part in parts:
        for entry in part["results"]:
            result = FileResult(entry["index"], CorpusReport.from_dict(entry["report"]), tuple(entry["langs"]))
            results[result.index] = (path / "parts", result)
    if sorted(results) != list(range(len(tasks))):
        raise DataError(f"seqlab data merge: the parts cover tasks {len(results)} of {len(tasks)}")
    out_dir = Path(os.path.abspath(out_dir))
    check_output(out_dir, overwrite)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{secrets.token_hex(4)}")
    try:
        finalize(tmp, tasks, CorpusReport.from_dict(first["plan_report"]), first["options"], results, progress)
        move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedCorpus.open(out_dir)


def finalize(root: Path, tasks: Sequence[FileTask], plan_report: CorpusReport, options: dict[str, Any],
             results: dict[int, tuple[Path, FileResult]], progress: bool) -> None:
    """Filter the documents of every part, write one shard per (source, lang), removed.jsonl and the manifest."""
    report = CorpusReport.from_dict(plan_report.to_dict())
    by_shard: dict[tuple[str, str], list[tuple[int, Path]]] = defaultdict(list)
    for index in sorted(results):
        parts_dir, result = results[index]
        report.merge(result.report)
        for lang in result.langs:
            by_shard[tasks[index].source, lang].append((index, part_folder(parts_dir, index) / lang))
    parts = [(key, index, stem) for key in sorted(by_shard) for index, stem in by_shard[key]]
    if not parts:
        raise DataError(f"no documents to store.\n{report.summary()}")
    # Memory-mapped, so only the concatenations hold the rows: (n_docs,) each, in output order.
    lengths = np.concatenate([np.load(f"{stem}.len.npy", mmap_mode="r") for _, _, stem in parts])
    meta = np.concatenate([np.load(f"{stem}.meta.npy", mmap_mode="r") for _, _, stem in parts])
    counts = [np.load(f"{stem}.len.npy", mmap_mode="r").shape[0] for _, _, stem in parts]
    part_of = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
    filters = options["filters"]
    set_names = list(filters["decontamination"]["sets"]) if filters["decontamination"] else []
    selection = select(meta, filters["dedup"])
    keeps = np.split(selection.keep, np.cumsum(counts)[:-1])
    shards = []
    for key in tqdm(sorted(by_shard), desc="write shards", disable=not progress):
        chosen = [i for i, part in enumerate(parts) if part[0] == key]
        if any(keeps[i].any() for i in chosen):
            files = [(Path(f"{parts[i][2]}.bin"), Path(f"{parts[i][2]}.len.npy")) for i in chosen]
            shards.append(write_shard(root, *key, files, [keeps[i] for i in chosen]))
    if not shards:
        raise DataError(f"every document was removed by the filters.\n{report.summary()}")
    duplicate, removed = selection.duplicate_of >= 0, ~selection.keep
    report.duplicate_documents, report.duplicate_tokens = int(duplicate.sum()), int(lengths[duplicate].sum())
    contaminated = selection.contaminated
    report.contaminated_documents = int(contaminated.sum())
    report.contaminated_tokens = int(lengths[contaminated].sum())
    sources = sorted({key[0] for key in by_shard})
    source_of = np.array([sources.index(part[0][0]) for part in parts])[part_of]
    counts = removal_counts(selection, meta, lengths, sources, source_of, filters["dedup"], set_names)
    _write_removed(root / REMOVED, np.flatnonzero(removed), selection, meta, lengths, part_of, parts, tasks,
                   set_names)
    preparation = {key: value for key, value in options.items() if key != "tokenizer"}
    write_manifest(root, options["tokenizer"], shards, report.to_dict(), {**preparation, "removed": counts})


def _write_removed(path: Path, removed: np.ndarray, selection: Any, meta: np.ndarray, lengths: np.ndarray,
                   part_of: np.ndarray, parts: list, tasks: Sequence[FileTask], set_names: list[str]) -> None:
    """One JSON line per removed document: where it was, how many tokens, and why (a loop over removed
    documents only)."""

    def where(i: int) -> dict[str, Any]:
        (source, lang), index, _ = parts[part_of[i]]
        file = tasks[index].file
        unit = "row" if file.format in ("parquet", "arrow") else "byte"
        return {"source": source, "lang": lang, "file": str(file.path), unit: int(meta["position"][i])}

    with open(path, "w", encoding="utf-8") as out:
        for i in removed:
            record = {**where(i), "tokens": int(lengths[i])}
            if selection.contaminated[i]:
                bits = int(meta["contamination"][i])
                record.update(reason="contaminated", eval_sets=[n for b, n in enumerate(set_names) if bits >> b & 1])
            else:
                record.update(reason="duplicate", duplicate_of=where(selection.duplicate_of[i]))
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_part(path: Path) -> dict[str, Any]:
    file = path / PART_MANIFEST
    try:
        part = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{file}: not found, so {path} is not a part folder of `seqlab data prepare "
                        "--num-shards N --shard-index I`") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{file}: unreadable ({err})") from None
    if not isinstance(part, dict) or part.get("format") != PART_FORMAT:
        raise DataError(f"{file}: format {part.get('format') if isinstance(part, dict) else None!r}, expected "
                        f"{PART_FORMAT!r}")
    return part


def check_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write over a file, or over a non-empty folder unless `overwrite`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"output {out_dir} exists and is not empty; pass --overwrite to replace it")


def move_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace out_dir by tmp with two renames: a reader finds the old corpus, the new one or none, never a mix."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f"{out_dir.name}.old-{secrets.token_hex(4)}")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old)
