"""`seqlab data prepare`: tokenize raw corpora in parallel into the memory-mapped format of `store`.

Work is split by file: each worker loads the tokenizer once, streams its file, encodes documents in batches
(SentencePiece's C++ batch encoder) and appends token ids to one part file per language. The parent then
concatenates parts per (source, lang) in sorted file order, so the output is byte-identical for any number
of workers. Everything is written under OUT.tmp-<random> and renamed into place at the end, so an
interrupted run never leaves a half-written corpus that looks complete.
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import secrets
import shutil
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from seqlab.data.corpus import (MAX_DOCUMENT_BYTES, CorpusFile, CorpusReport, Document, find_files, is_valid_name,
                                read_file)
from seqlab.data.store import PreparedCorpus, token_dtype, write_manifest, write_shard
from seqlab.errors import ConfigError, DataError
from seqlab.tokenizer import Tokenizer

# Batches bound memory (at most ~16M characters plus one document, itself at most max_document_bytes) while
# being large enough that per-call overhead in SentencePiece and numpy is negligible.
BATCH_DOCUMENTS = 1000
BATCH_CHARACTERS = 16 << 20


@dataclass(frozen=True)
class FileTask:
    """One input file, numbered in output order; its part files go to parts_dir/<index>/<lang>.*"""

    index: int
    source: str
    file: CorpusFile


@dataclass(frozen=True)
class FileResult:
    index: int
    report: CorpusReport
    parts: dict[str, tuple[Path, Path]]  # lang -> (tokens .bin, lengths .npy)


class FileEncoder:
    """Encodes whole files into part files; built once per worker process because loading a model is slow."""

    def __init__(self, tokenizer_path: Path, parts_dir: Path, max_document_bytes: int, threads: int = -1):
        self.tokenizer = Tokenizer(tokenizer_path)
        self.max_document_bytes = max_document_bytes
        self.threads = threads  # SentencePiece threads per call: 1 in pool workers, or they oversubscribe
        self.dtype = token_dtype(self.tokenizer.vocab_size)
        self.parts_dir = parts_dir

    def __call__(self, task: FileTask) -> FileResult:
        report = CorpusReport()
        folder = self.parts_dir / f"{task.index:07d}"
        folder.mkdir(parents=True)
        streams: dict[str, BinaryIO] = {}
        lengths: dict[str, list[np.ndarray]] = defaultdict(list)
        with ExitStack() as open_files:
            for batch in _batches(read_file(task.file, report, self.max_document_bytes)):
                for lang, (tokens, doc_lengths) in self._encode(batch, report).items():
                    if lang not in streams:
                        streams[lang] = open_files.enter_context(open(folder / f"{lang}.bin", "wb"))
                    tokens.tofile(streams[lang])
                    lengths[lang].append(doc_lengths)
        parts = {}
        for lang, chunks in lengths.items():
            np.save(folder / f"{lang}.len.npy", np.concatenate(chunks))
            parts[lang] = (folder / f"{lang}.bin", folder / f"{lang}.len.npy")
        return FileResult(task.index, report, parts)

    def _encode(self, batch: list[Document], report: CorpusReport) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Token ids and document lengths of one batch, per language, with empty documents dropped."""
        ids = self.tokenizer.encode([doc.text for doc in batch], num_threads=self.threads)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        # fromiter over a chained iterator converts Python ints in C: ~10 ns per token, no Python loop.
        tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=self.dtype, count=int(lengths.sum()))
        report.empty_after_tokenization += int(np.count_nonzero(lengths == 0))
        langs = np.array([doc.lang for doc in batch])
        out = {}
        for lang in np.unique(langs):  # JSONL records may mix languages within one file
            keep = (langs == lang) & (lengths > 0)
            if keep.any():
                out[str(lang)] = (tokens[np.repeat(keep, lengths)], lengths[keep])
        return out


def prepare_corpus(
    inputs: list[str | Path],
    tokenizer_path: str | Path,
    out_dir: str | Path,
    *,
    source: str | None = None,
    lang: str | None = None,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> PreparedCorpus:
    """Tokenize `inputs` (files or folders per language, see corpus.LAYOUT) into a prepared corpus at `out_dir`.

    Each input is one source named after it (file stem or folder name) unless `source` names one source for
    all. `lang` is the language of documents that neither a folder nor a JSONL "lang" field assigns. Lines
    longer than `max_document_bytes` become several documents (see `seqlab.data.corpus`).
    """
    if workers < 1:
        raise ConfigError(f"workers={workers} must be >= 1")
    if type(max_document_bytes) is not int or max_document_bytes < 4:
        raise ConfigError(f"max_document_bytes={max_document_bytes!r}: must be an integer >= 4")
    out_dir = Path(os.path.abspath(out_dir))  # "." and "out/" need a name for the OUT.tmp-* sibling
    tasks, report = _plan(inputs, source, lang, out_dir)
    _check_output(out_dir, overwrite)
    tokenizer = Tokenizer(tokenizer_path)  # fail on a bad tokenizer before starting workers
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{secrets.token_hex(4)}")
    parts_dir = tmp / "parts"
    try:
        results = _encode_files(tasks, (tokenizer.path, parts_dir, max_document_bytes), workers, progress)
        for result in results:
            report.merge(result.report)
        by_shard: dict[tuple[str, str], list[tuple[Path, Path]]] = defaultdict(list)
        for task, result in zip(tasks, results):
            for part_lang, part in result.parts.items():
                by_shard[task.source, part_lang].append(part)
        if not by_shard:
            raise DataError(f"no documents to store in {[str(p) for p in inputs]}.\n{report.summary()}")
        shards = [write_shard(tmp, name, part_lang, by_shard[name, part_lang]) for name, part_lang in sorted(by_shard)]
        shutil.rmtree(parts_dir)
        write_manifest(tmp, tokenizer, shards, report.to_dict())
        _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedCorpus.open(out_dir)


def _plan(inputs: list[str | Path], source: str | None, lang: str | None,
          out_dir: Path) -> tuple[list[FileTask], CorpusReport]:
    """Validate inputs and list every file to encode, ordered by (source, path) as in the output."""
    if not inputs:
        raise ConfigError("inputs=[]: give at least one corpus file or folder")
    if source is not None and not is_valid_name(source):
        raise ConfigError(f"source={source!r} must be a name such as 'web' or 'flores' (letters, digits, _ . + -)")
    report = CorpusReport()
    named: dict[str, Path] = {}
    files: list[tuple[str, CorpusFile]] = []
    for path in map(Path, inputs):
        if out_dir.resolve() in (path.resolve(), *path.resolve().parents):
            raise ConfigError(f"output {out_dir} would overwrite input {path}")
        name = source or (path.stem if path.is_file() else path.name)
        if not is_valid_name(name):
            raise ConfigError(f"source name {name!r} taken from input {path} is not valid; pass --source NAME")
        if source is None and name in named:
            raise ConfigError(f"inputs {named[name]} and {path} both give source name {name!r}; "
                              "rename one or pass --source to merge them")
        named[name] = path
        files += [(name, file) for file in find_files(path, report, lang)]
    ordered = sorted(files, key=lambda item: (item[0], str(item[1].path)))
    if len({file.path.resolve() for _, file in ordered}) != len(ordered):
        raise ConfigError(f"inputs {[str(p) for p in inputs]} name some files twice; "
                          "their documents would be stored twice")
    return [FileTask(i, name, file) for i, (name, file) in enumerate(ordered)], report


def _check_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"output {out_dir} exists and is not empty; pass --overwrite to replace it")


def _encode_files(tasks: list[FileTask], encoder_args: tuple[Path, Path, int], workers: int,
                  progress: bool) -> list[FileResult]:
    """Encode every file, in a process pool when workers > 1; results come back in task order.

    `encoder_args` are FileEncoder's (tokenizer path, parts folder, max_document_bytes)."""
    sizes = [_size(task.file.path) for task in tasks]
    bar = tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="prepare", disable=not progress)
    results: list[FileResult] = []
    with bar:
        if workers == 1 or len(tasks) <= 1:
            encode = FileEncoder(*encoder_args)
            for task, size in zip(tasks, sizes):
                results.append(encode(task))
                bar.update(size)
            return results
        # "spawn": forking a parent that may hold torch threads or CUDA state can deadlock the children.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context, initializer=_init_worker,
                                 initargs=encoder_args) as pool:
            futures = {pool.submit(_encode_in_worker, task): size for task, size in zip(tasks, sizes)}
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(futures[future])
    return sorted(results, key=lambda result: result.index)


_ENCODER: FileEncoder | None = None


def _init_worker(tokenizer_path: Path, parts_dir: Path, max_document_bytes: int) -> None:
    global _ENCODER
    _ENCODER = FileEncoder(tokenizer_path, parts_dir, max_document_bytes, threads=1)


def _encode_in_worker(task: FileTask) -> FileResult:
    assert _ENCODER is not None, "worker initializer did not run"
    return _ENCODER(task)


def _batches(docs: Iterable[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    characters = 0
    for doc in docs:
        batch.append(doc)
        characters += len(doc.text)
        if len(batch) >= BATCH_DOCUMENTS or characters >= BATCH_CHARACTERS:
            yield batch
            batch, characters = [], 0
    if batch:
        yield batch


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # unreadable; read_file counts it


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace out_dir by tmp with two renames: a reader finds the old corpus, the new one or none, never a mix."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f"{out_dir.name}.old-{secrets.token_hex(4)}")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old)
