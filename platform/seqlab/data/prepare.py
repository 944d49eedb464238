"""`seqlab data prepare`: tokenize raw corpora in parallel into the memory-mapped format of `store`.

The plan (`seqlab.data.plan`) lists file parts in output order. Each worker loads the tokenizer once, streams
its parts, encodes documents in batches (SentencePiece's C++ batch encoder), computes each document's
filter row (`seqlab.data.filters`) and appends token ids to one part file per language. The parts are then
joined (`seqlab.data.merge`): filtered, concatenated per (source, lang) in plan order, so the output is
byte-identical for any number of workers or jobs.

With `num_shards` > 1 a job encodes only its share of the plan and writes a part folder; `seqlab data merge`
joins the part folders of all jobs. Everything is written under OUT.tmp-<random> and renamed into place at
the end, so an interrupted run never leaves a half-written corpus or part folder that looks complete.
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
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from seqlab.data.corpus import MAX_DOCUMENT_BYTES, CorpusReport, Document, read_positioned
from seqlab.data.decontaminate import DEFAULT_NGRAM, load_eval_ngrams
from seqlab.data.filters import Filters
from seqlab.data.merge import FileResult, check_output, finalize, move_into_place, part_folder, write_part_folder
from seqlab.data.plan import PART_BYTES, FileTask, assign, plan_digest, plan_tasks
from seqlab.data.store import PreparedCorpus, token_dtype, tokenizer_entry
from seqlab.errors import ConfigError, WriteError, write_failure
from seqlab.tokenizer import Tokenizer

# Batches bound memory (at most ~16M characters plus one document, itself at most max_document_bytes) while
# being large enough that per-call overhead in SentencePiece and numpy is negligible.
BATCH_DOCUMENTS = 1000
BATCH_CHARACTERS = 16 << 20


class FileEncoder:
    """Encodes file parts into part files; built once per worker process because loading a model is slow."""

    def __init__(self, tokenizer_path: Path, parts_dir: Path, max_document_bytes: int, filters: Filters,
                 threads: int = -1):
        self.tokenizer = Tokenizer(tokenizer_path)
        self.max_document_bytes = max_document_bytes
        self.filters = filters
        self.threads = threads  # SentencePiece threads per call: 1 in pool workers, or they oversubscribe
        self.dtype = token_dtype(self.tokenizer.vocab_size)
        self.parts_dir = parts_dir

    def __call__(self, task: FileTask) -> FileResult:
        report = CorpusReport()
        folder = part_folder(self.parts_dir, task.index)
        folder.mkdir(parents=True)
        streams: dict[str, BinaryIO] = {}
        lengths: dict[str, list[np.ndarray]] = defaultdict(list)
        metas: dict[str, list[np.ndarray]] = defaultdict(list)
        with ExitStack() as open_files:
            for batch in _batches(read_positioned(task.file, report, self.max_document_bytes)):
                for lang, (tokens, doc_lengths, meta) in self._encode(batch, report).items():
                    if lang not in streams:
                        streams[lang] = open_files.enter_context(open(folder / f"{lang}.bin", "wb"))
                    tokens.tofile(streams[lang])
                    lengths[lang].append(doc_lengths)
                    metas[lang].append(meta)
        for lang in lengths:
            np.save(folder / f"{lang}.len.npy", np.concatenate(lengths[lang]))
            np.save(folder / f"{lang}.meta.npy", np.concatenate(metas[lang]))
        return FileResult(task.index, report, tuple(sorted(lengths)))

    def _encode(self, batch: list[tuple[int, Document]],
                report: CorpusReport) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Token ids, document lengths and filter rows of one batch, per language, empty documents dropped."""
        texts = [doc.text for _, doc in batch]
        ids = self.tokenizer.encode(texts, num_threads=self.threads)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        # fromiter over a chained iterator converts Python ints in C: ~10 ns per token, no Python loop.
        tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=self.dtype, count=int(lengths.sum()))
        report.empty_after_tokenization += int(np.count_nonzero(lengths == 0))
        meta = self.filters.document_meta(texts, [position for position, _ in batch])
        langs = np.array([doc.lang for _, doc in batch])
        out = {}
        for lang in np.unique(langs):  # JSONL records may mix languages within one file
            keep = (langs == lang) & (lengths > 0)
            if keep.any():
                out[str(lang)] = (tokens[np.repeat(keep, lengths)], lengths[keep], meta[keep])
        return out


def prepare_corpus(
    inputs: Sequence[str | Path],
    tokenizer_path: str | Path,
    out_dir: str | Path,
    *,
    source: str | None = None,
    lang: str | None = None,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
    text_field: str = "text",
    lang_field: str = "lang",
    dedup: bool = True,
    decontaminate: Sequence[str] = (),
    ngram: int = DEFAULT_NGRAM,
    eval_data_root: str | Path | None = None,
    part_bytes: int = PART_BYTES,
    num_shards: int = 1,
    shard_index: int = 0,
) -> PreparedCorpus | Path:
    """Tokenize `inputs` (files or folders per language, see corpus.LAYOUT) into a prepared corpus at `out_dir`.

    Each input is one source named after it (file stem or folder name) unless `source` names one source for
    all. `lang` is the language of documents that neither a folder nor a record's `lang_field` assigns; the
    text is read from `text_field` of JSONL, parquet and Arrow records. Lines longer than `max_document_bytes`
    become several documents (see `seqlab.data.corpus`). `dedup` drops exact duplicates; `decontaminate` names
    evaluation sets (eval-task names or files) whose `ngram`-grams remove training documents.

    With `num_shards` > 1, encodes only job `shard_index`'s share and writes a part folder for `seqlab data
    merge` (returning its path) instead of a prepared corpus.
    """
    if workers < 1:
        raise ConfigError(f"workers={workers} must be >= 1")
    if type(max_document_bytes) is not int or max_document_bytes < 4:
        raise ConfigError(f"max_document_bytes={max_document_bytes!r}: must be an integer >= 4")
    if type(num_shards) is not int or num_shards < 1 or type(shard_index) is not int \
            or not 0 <= shard_index < num_shards:
        raise ConfigError(f"--num-shards={num_shards!r} --shard-index={shard_index!r}: need num_shards >= 1 and "
                          "0 <= shard_index < num_shards (SLURM: --shard-index $SLURM_ARRAY_TASK_ID)")
    out_dir = Path(os.path.abspath(out_dir))  # "." and "out/" need a name for the OUT.tmp-* sibling
    tasks, report = plan_tasks(inputs, source, lang, out_dir, text_field=text_field, lang_field=lang_field,
                               part_bytes=part_bytes)
    check_output(out_dir, overwrite)
    tokenizer = Tokenizer(tokenizer_path)  # fail on a bad tokenizer before starting workers
    eval_ngrams = load_eval_ngrams(decontaminate, ngram, eval_data_root) if decontaminate else None
    filters = Filters(dedup, eval_ngrams)
    options = {"tokenizer": tokenizer_entry(tokenizer), "max_document_bytes": max_document_bytes,
               "part_bytes": part_bytes, "filters": filters.describe()}
    digest = plan_digest(tasks, options)
    mine = assign(tasks, num_shards)[shard_index] if num_shards > 1 else [task.index for task in tasks]
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{secrets.token_hex(4)}")
    parts_dir = tmp / "parts"
    try:
        encoder_args = (tokenizer.path, parts_dir, max_document_bytes, filters)
        results = _encode_files([tasks[i] for i in mine], encoder_args, workers, progress)
        if num_shards > 1:
            write_part_folder(tmp, digest, num_shards, shard_index, tasks, report, options, results)
        else:
            finalize(tmp, tasks, report, options, {r.index: (parts_dir, r) for r in results}, progress)
            shutil.rmtree(parts_dir)
        move_into_place(tmp, out_dir)
    except OSError as err:  # the inputs' own errors are counted where they are read: this is a write
        file = err.filename if isinstance(err.filename, str) else tmp
        failure = write_failure(file, err)
        raise WriteError(failure.path, f"{failure.cause}. Nothing was written to {out_dir}"
                         + (" (the corpus there is as it was)" if out_dir.exists() else "")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir if num_shards > 1 else PreparedCorpus.open(out_dir)


def _encode_files(tasks: list[FileTask], encoder_args: tuple[Any, ...], workers: int,
                  progress: bool) -> list[FileResult]:
    """Encode every task, in a process pool when workers > 1; results come back in task order.

    `encoder_args` are FileEncoder's (tokenizer path, parts folder, max_document_bytes, filters)."""
    bar = tqdm(total=sum(task.size for task in tasks), unit="B", unit_scale=True, desc="prepare",
               disable=not progress)
    results: list[FileResult] = []
    with bar:
        if workers == 1 or len(tasks) <= 1:
            encode = FileEncoder(*encoder_args)
            for task in tasks:
                results.append(encode(task))
                bar.update(task.size)
            return results
        # "spawn": forking a parent that may hold torch threads or CUDA state can deadlock the children.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context, initializer=_init_worker,
                                 initargs=encoder_args) as pool:
            futures = {pool.submit(_encode_in_worker, task): task.size for task in tasks}
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(futures[future])
    return sorted(results, key=lambda result: result.index)


_ENCODER: FileEncoder | None = None


def _init_worker(tokenizer_path: Path, parts_dir: Path, max_document_bytes: int, filters: Filters) -> None:
    global _ENCODER
    _ENCODER = FileEncoder(tokenizer_path, parts_dir, max_document_bytes, filters, threads=1)


def _encode_in_worker(task: FileTask) -> FileResult:
    assert _ENCODER is not None, "worker initializer did not run"
    return _ENCODER(task)


def _batches(docs: Iterable[tuple[int, Document]]) -> Iterator[list[tuple[int, Document]]]:
    batch: list[tuple[int, Document]] = []
    characters = 0
    for item in docs:
        batch.append(item)
        characters += len(item[1].text)
        if len(batch) >= BATCH_DOCUMENTS or characters >= BATCH_CHARACTERS:
            yield batch
            batch, characters = [], 0
    if batch:
        yield batch
