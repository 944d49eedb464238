"""`corpus`: raw corpora in any format `seqlab data prepare` reads, prepared on first use into the run cache."""
from __future__ import annotations

import fcntl
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from seqlab.config import DataConfig
from seqlab.data.corpus import MAX_DOCUMENT_BYTES, CorpusReport
from seqlab.data.decontaminate import DEFAULT_NGRAM, MAX_SETS
from seqlab.data.prepare import prepare_corpus
from seqlab.data.store import MANIFEST
from seqlab.errors import ConfigError, require
from seqlab.registry import DATA_SOURCES
from seqlab.tokenizer import Tokenizer


@dataclass
class CorpusDataConfig(DataConfig):
    # .txt/.jsonl (optionally .gz or .zst), .parquet, a datasets save_to_disk folder, or a folder per language
    paths: List[str] = field(default_factory=list)
    source: Optional[str] = None  # one source name for all paths; default: each path's name
    lang: Optional[str] = None  # language of files that do not say (folders per language always do)
    text_field: str = "text"  # of JSONL records and parquet/Arrow rows
    lang_field: str = "lang"
    prepare_workers: int = 2
    max_document_bytes: int = MAX_DOCUMENT_BYTES  # longer lines are cut into several documents
    dedup: bool = True  # drop exact duplicates of a normalised text, keeping the first
    # eval-task names (read from $SEQLAB_EVAL_DATA) or files: documents sharing an ngram-gram with them are removed
    decontaminate: List[str] = field(default_factory=list)
    ngram: int = DEFAULT_NGRAM

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.paths) > 0, "data.paths", list(self.paths), "must list at least one file or folder")
        require(self.prepare_workers >= 1, "data.prepare_workers", self.prepare_workers, "must be >= 1")
        require(self.max_document_bytes >= 4, "data.max_document_bytes", self.max_document_bytes, "must be >= 4")
        require(self.ngram >= 1, "data.ngram", self.ngram, "must be >= 1")
        require(len(self.decontaminate) <= MAX_SETS, "data.decontaminate", list(self.decontaminate),
                f"at most {MAX_SETS} evaluation sets")


def fingerprint(paths: list[str], tokenizer: Tokenizer, options: tuple[object, ...]) -> str:
    """Changes whenever an input file, its size or time, the tokenizer or a preparation option changes."""
    h = hashlib.sha256(tokenizer.sha256().encode())
    h.update(json.dumps(list(options)).encode())
    for raw in paths:
        root = Path(raw).expanduser().resolve()
        if not root.exists():
            raise ConfigError(f"data.paths: {raw} does not exist")
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            stat = path.stat()
            h.update(json.dumps([str(path), stat.st_size, stat.st_mtime_ns]).encode())
    return h.hexdigest()[:16]


@DATA_SOURCES.register("corpus", config=CorpusDataConfig)
class CorpusSource:
    """Raw corpora (txt/jsonl/folder per language), tokenized once into the cache and reused."""

    def __init__(self, cfg: CorpusDataConfig):
        self.cfg = cfg

    def prepared_dir(self, tokenizer: Tokenizer, cache_dir: Path) -> Path:
        options = (self.cfg.source, self.cfg.lang, self.cfg.max_document_bytes, self.cfg.text_field,
                   self.cfg.lang_field, self.cfg.dedup, list(self.cfg.decontaminate), self.cfg.ngram)
        out = cache_dir / "prepared" / fingerprint(list(self.cfg.paths), tokenizer, options)
        out.parent.mkdir(parents=True, exist_ok=True)
        # Ranks started together (torchrun) must not prepare the same corpus twice: the first takes the lock.
        with open(out.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / MANIFEST).is_file():
                prepared = prepare_corpus(list(self.cfg.paths), tokenizer.path, out, source=self.cfg.source,
                                          lang=self.cfg.lang, workers=self.cfg.prepare_workers, overwrite=True,
                                          max_document_bytes=self.cfg.max_document_bytes,
                                          text_field=self.cfg.text_field, lang_field=self.cfg.lang_field,
                                          dedup=self.cfg.dedup, decontaminate=list(self.cfg.decontaminate),
                                          ngram=self.cfg.ngram)
                print(f"prepared corpus cached in {out}\n{CorpusReport.from_dict(prepared.report).summary()}")
        return out
