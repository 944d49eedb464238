"""Corpus file formats: plain and compressed line files, parquet, and `datasets` folders, read as streams.

- `.txt`, `.jsonl` (`.json`: JSON lines too, as mC4 names them), each optionally `.gz` or `.zst` compressed:
  decompressed as a stream, one line at a time, never the whole file in memory;
- `.parquet`: read one record batch at a time (row group by row group), only the text and language columns;
- a folder written by `datasets.Dataset.save_to_disk` (`state.json`, `dataset_info.json`, `*.arrow`): its Arrow
  files memory-mapped and read batch by batch.

A compressed or columnar file that turns out corrupt (a truncated gzip, a bad zstd frame, a broken parquet
footer or page) keeps every document read before the damage; the rest of the file is counted in the report as
`corrupt_files`. pyarrow reads parquet and Arrow, zstandard reads .zst: `pip install 'seqlab[data]'`.
"""
from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from seqlab.data.document import Compression, Format
from seqlab.errors import ConfigError, DataError

BATCH_ROWS = 1024  # rows per parquet/Arrow batch: bounded memory whatever the file's row groups hold

# Longest first, so ".jsonl.gz" is not read as ".gz".
SUFFIXES: dict[str, tuple[Format, Compression]] = {
    ".jsonl.gz": ("jsonl", "gzip"), ".json.gz": ("jsonl", "gzip"), ".jsonl.zst": ("jsonl", "zstd"),
    ".json.zst": ("jsonl", "zstd"), ".txt.gz": ("text", "gzip"), ".txt.zst": ("text", "zstd"),
    ".parquet": ("parquet", None), ".jsonl": ("jsonl", None), ".json": ("jsonl", None), ".txt": ("text", None),
}
KNOWN = ", ".join(SUFFIXES)


def detect(path: Path) -> tuple[Format, Compression] | None:
    """The format of a file by its name, or None for an unsupported one."""
    name = path.name.lower()
    return next((kind for suffix, kind in SUFFIXES.items() if name.endswith(suffix)), None)


def stem(path: Path) -> str:
    """The name without its format's suffix: "c4-train.00001.json.gz" -> "c4-train.00001"."""
    name = path.name
    suffix = next((suffix for suffix in SUFFIXES if name.lower().endswith(suffix)), path.suffix)
    return name[: len(name) - len(suffix)] if suffix else name


def is_arrow_dataset(folder: Path) -> bool:
    """Whether `folder` was written by `datasets`' save_to_disk."""
    return (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def corruption_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged compressed or columnar file raises (beyond OSError, which covers BadGzipFile)."""
    errors: list[type[BaseException]] = [EOFError, zlib.error]
    for module, name in (("zstandard", "ZstdError"), ("pyarrow", "ArrowException")):
        try:
            errors.append(getattr(__import__(module), name))
        except ImportError:
            pass
    return tuple(errors)


def _need(module: str, what: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"reading {what} needs the {module} package: pip install 'seqlab[data]'") from None


def open_lines(path: Path, compression: Compression) -> BinaryIO:
    """A binary stream of the decompressed bytes, with readline."""
    if compression == "gzip":
        return gzip.open(path, "rb")  # multi-member files (mC4's) are read through
    if compression == "zstd":
        zstd = _need("zstandard", f"{path.name} (zstd)")
        # read_across_frames: files are often several frames; BufferedReader gives readline.
        raw = zstd.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True, closefd=True)
        return io.BufferedReader(raw)
    return open(path, "rb")


def record_batches(path: Path, fmt: Format, columns: list[str],
                   span: tuple[int, int] | None = None) -> tuple[Iterator[Any], int]:
    """pyarrow RecordBatches of at most BATCH_ROWS rows with the wanted `columns` that the file has (of the
    row groups in `span` for parquet), and the number of the first row. The text column (the first) missing
    is a DataError naming the file and the columns it has."""
    pa = _need("pyarrow", f"{path.name} ({fmt})")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # Reads the footer: a broken one raises here. Page checksums, where the writer stored them, are
        # verified, so a damaged page raises instead of giving altered text.
        reader = pq.ParquetFile(path, page_checksum_verification=True)
        names = reader.schema_arrow.names
        _check_text_column(path, columns[0], names)
        groups = range(*span) if span is not None else range(reader.num_row_groups)
        first = sum(reader.metadata.row_group(i).num_rows for i in range(groups.start))
        wanted = [c for c in columns if c in names]
        # One row group at a time: a batch never spans two, so a damaged one costs only its own rows.
        batches = (batch for group in groups
                   for batch in reader.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=wanted))
        return batches, first
    return _arrow_batches(pa, path, columns), 0


def parquet_row_groups(path: Path) -> list[int]:
    """The compressed size in bytes of each row group of a parquet file (read from its footer only)."""
    _need("pyarrow", f"{path.name} (parquet)")
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    return [sum(group.column(j).total_compressed_size for j in range(group.num_columns)) for group in groups]


def _arrow_batches(pa: Any, folder: Path, columns: list[str]) -> Iterator[Any]:
    for file in arrow_files(folder):
        with pa.memory_map(str(file)) as source:
            stream = pa.ipc.open_stream(source)
            names = stream.schema.names
            _check_text_column(file, columns[0], names)
            for batch in stream:
                batch = batch.select([c for c in columns if c in names])
                for start in range(0, batch.num_rows, BATCH_ROWS):
                    yield batch.slice(start, BATCH_ROWS)


def arrow_files(folder: Path) -> list[Path]:
    """The Arrow files of a save_to_disk folder, in the order its state.json lists them."""
    state = folder / "state.json"
    try:
        names = [entry["filename"] for entry in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{state}: not a datasets save_to_disk state ({type(err).__name__}: {err})") from None
    return [folder / name for name in names]


def _check_text_column(path: Path, text_field: str, names: list[str]) -> None:
    if text_field not in names:
        raise DataError(f"{path}: no column {text_field!r} for the text (--text-field); columns: "
                        f"{', '.join(names) or 'none'}")
