"""Peak memory of `seqlab data prepare` on a large input, against the same command on a tiny one.

Writes a corpus of unique documents (the embedded corpus's lines, grouped eight to a document and numbered)
as .jsonl.gz and as .parquet, SIZE of JSON text each, then runs `seqlab data prepare --workers 1` on each in a
child process and reads the child's peak resident set size from wait4(2). The tiny run (1 MB) measures the
fixed cost (interpreter, numpy, pyarrow, the tokenizer); the difference is what the input's size adds.
The inputs are written by a separate process so that this one, whose image each child starts from, stays small.
Deduplication is on (the default), so every document's filter row is held at the join.
Run: `python benchmarks/profile_prepare_memory.py [--gigabytes 1.0] [--workdir DIR]`; it prints a table and
writes it to benchmarks/results/prepare_memory.txt.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seqlab.experiment import resource_path

RESULTS = Path(__file__).resolve().parent / "results"
LINES_PER_DOCUMENT = 8
ROWS_PER_GROUP = 20_000  # ~8 MB row groups, the order of the hub's parquet dumps


def documents(size: int):
    """Unique JSON-lines records totalling about `size` bytes: (record line, text, lang)."""
    by_lang = {path.parent.name: [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
               for path in sorted(Path(resource_path("corpus")).rglob("*.txt"))}
    written = 0
    for number in itertools.count():
        lang = sorted(by_lang)[number % len(by_lang)]
        lines = by_lang[lang]
        start = (number * LINES_PER_DOCUMENT) % len(lines)
        text = " ".join(lines[start:start + LINES_PER_DOCUMENT]) + f" [{number}]"
        record = json.dumps({"text": text, "lang": lang}, ensure_ascii=False) + "\n"
        written += len(record.encode())
        yield record, text, lang
        if written >= size:
            return


def input_paths(folder: Path) -> dict[str, Path]:
    return {"jsonl.gz": folder / "docs.jsonl.gz", "parquet": folder / "docs.parquet"}


def write_inputs(folder: Path, size: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = input_paths(folder)
    schema = pa.schema([("text", pa.string()), ("lang", pa.string())])
    with gzip.open(paths["jsonl.gz"], "wt", encoding="utf-8", compresslevel=1) as gz, \
            pq.ParquetWriter(paths["parquet"], schema) as writer:
        rows = iter(documents(size))
        while chunk := list(itertools.islice(rows, ROWS_PER_GROUP)):
            gz.write("".join(record for record, _, _ in chunk))
            writer.write_table(pa.table({"text": [t for _, t, _ in chunk], "lang": [g for _, _, g in chunk]},
                                        schema=schema))


def peak_rss(path: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one `seqlab data prepare` child process."""
    command = [sys.executable, "-m", "seqlab", "data", "prepare", str(path), "--output", str(out),
               "--tokenizer", resource_path("tokenizer/embedded.model"), "--workers", "1"]
    # The progress bar goes to a file: a pipe nobody reads until the end would fill and stall the child.
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=log, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{log.read().decode(errors='replace')[-4000:]}")
    return usage.ru_maxrss / 1024, seconds  # Linux reports ru_maxrss in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="JSON text per format (default 1.0)")
    parser.add_argument("--workdir", type=Path, help="where the inputs and outputs go (default: a temp folder)")
    parser.add_argument("--write-inputs", nargs=2, metavar=("DIR", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_inputs:
        write_inputs(Path(args.write_inputs[0]), int(args.write_inputs[1]))
        return
    work = Path(tempfile.mkdtemp(prefix="prepare-memory-", dir=args.workdir))
    rows = []
    try:
        for label, size in (("tiny", 1 << 20), ("large", int(args.gigabytes * 1e9))):
            # Linux counts the image a child was forked from in its peak RSS: keep writing out of this process.
            subprocess.run([sys.executable, __file__, "--write-inputs", str(work / label), str(size)], check=True)
            for fmt, path in input_paths(work / label).items():
                rss, seconds = peak_rss(path, work / f"out-{label}-{fmt}")
                rows.append((fmt, label, path.stat().st_size, size, rss, seconds))
                shutil.rmtree(work / f"out-{label}-{fmt}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"{'format':10} {'input':>6} {'file MB':>9} {'text MB':>9} {'peak RSS MiB':>13} {'seconds':>8}"]
    lines += [f"{fmt:10} {label:>6} {disk / 1e6:9.1f} {text / 1e6:9.1f} {rss:13.0f} {seconds:8.1f}"
              for fmt, label, disk, text, rss, seconds in sorted(rows)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prepare_memory.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
