"""`public_text`: multilingual text of public data sets in their published layouts, prepared on first use.

The sources (NTREX-128, TICO-19, lingua's web sentences, the UDHR) are read from `root` as published, their text
is written as a folder per source and language, and that is tokenized into the run cache, each data set a source
of its own (`data.weights.ntrex128=2`). Sentences of the eval sets in `exclude` are never trained on: FLORES-200
dev and devtest, which the translation and SIB-200 evals use, by default.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from omegaconf import MISSING

from seqlab.config import DataConfig
from seqlab.data.corpus import CorpusReport
from seqlab.data.prepare import prepare_corpus
from seqlab.data.store import MANIFEST
from seqlab.errors import require
from seqlab.registry import DATA_SOURCES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.data.public_sources import (EVAL_LAYOUTS, EVAL_SETS, FOLDERS, LAYOUTS, Extraction, eval_files,
                                                excluded_texts, extract, source_files)

# Part of the fingerprint: a change to what extraction produces must not reuse text extracted before it.
EXTRACTION_VERSION = 1
REPORT = "extraction.json"


@dataclass
class PublicTextConfig(DataConfig):
    root: str = MISSING  # the folder holding the data sets as published (ntrex128/, tico19/, ..., flores200/)
    sources: List[str] = field(default_factory=lambda: ["ntrex128", "tico19", "lingua", "udhr"])
    # Eval sets never trained on: a name in EVAL_SETS, or a text file (relative to root, or absolute) of lines.
    exclude: List[str] = field(default_factory=lambda: ["flores200"])
    lines_per_document: int = 1  # consecutive lines of a file joined into one document; UDHR: a paragraph each
    prepare_workers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.root not in ("", MISSING), "data.root", self.root,
                "not set; give data.root=FOLDER holding the data sets (data=study reads SEQLAB_EVAL_DATA)")
        root = Path(self.root).expanduser()
        require(root.is_dir(), "data.root", self.root, "no such folder; it must hold the data sets as published: "
                + ", ".join(f"{name}/" for name in (*FOLDERS, *EVAL_SETS)))
        require(len(self.sources) > 0, "data.sources", list(self.sources), "must list at least one source")
        require(len(set(self.sources)) == len(self.sources), "data.sources", list(self.sources),
                "names a source twice")
        for source in self.sources:
            require(source in FOLDERS, "data.sources", source, f"unknown source; choose from {', '.join(FOLDERS)}")
            require((root / FOLDERS[source]).is_dir(), "data.sources", source,
                    f"{root / FOLDERS[source]} not found; expected the published layout {LAYOUTS[source]}")
        for name in self.exclude:
            if name in EVAL_SETS:
                folders = {Path(pattern).parent for pattern in EVAL_SETS[name]}
                require(all((root / folder).is_dir() for folder in folders), "data.exclude", name,
                        f"not found under data.root={self.root}; expected {EVAL_LAYOUTS[name]}")
            else:
                require(exclude_path(root, name).is_file(), "data.exclude", name,
                        f"neither an eval set ({', '.join(EVAL_SETS)}) nor a text file of lines to exclude "
                        f"(absolute, or relative to data.root={self.root})")
        require(self.lines_per_document >= 1, "data.lines_per_document", self.lines_per_document, "must be >= 1")
        require(self.prepare_workers >= 1, "data.prepare_workers", self.prepare_workers, "must be >= 1")


def exclude_path(root: Path, entry: str) -> Path:
    path = Path(entry).expanduser()
    return path if path.is_absolute() else root / path


def excluded_files(root: Path, exclude: list[str]) -> list[Path]:
    """The files whose lines are never trained on."""
    return sorted({path for name in exclude
                   for path in (eval_files(root, name) if name in EVAL_SETS else [exclude_path(root, name)])})


def fingerprint(files: list[Path], tokenizer: Tokenizer, options: tuple[object, ...]) -> str:
    """Changes whenever an input file (path, size, time), the tokenizer or an extraction option changes."""
    h = hashlib.sha256(tokenizer.sha256().encode())
    h.update(json.dumps(list(options)).encode())
    for path in files:
        stat = path.stat()
        h.update(json.dumps([str(path), stat.st_size, stat.st_mtime_ns]).encode())
    return h.hexdigest()[:16]


@DATA_SOURCES.register("public_text", config=PublicTextConfig)
class PublicTextSource:
    """NTREX-128, TICO-19, lingua and UDHR text from their published layouts, eval sentences left out."""

    def __init__(self, cfg: PublicTextConfig):
        self.cfg = cfg

    def prepared_dir(self, tokenizer: Tokenizer, cache_dir: Path) -> Path:
        root = Path(self.cfg.root).expanduser().resolve()
        sources, exclude = list(self.cfg.sources), list(self.cfg.exclude)
        inputs = [path for source in sources for path, _ in source_files(root, source)]
        excludes = excluded_files(root, exclude)
        options = (EXTRACTION_VERSION, sources, exclude, self.cfg.lines_per_document)
        base = Path(cache_dir) / "public_text" / fingerprint(inputs + excludes, tokenizer, options)
        out = base / "prepared"
        base.mkdir(parents=True, exist_ok=True)
        # Ranks started together (torchrun) must not prepare the same corpus twice: the first takes the lock.
        with open(base.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / MANIFEST).is_file():
                extraction = extract(root, sources, excluded_texts(excludes), self.cfg.lines_per_document)
                counts = extraction.counts()
                text = _write_text(extraction, base / "text")
                _write_json(base / REPORT, {"root": str(root), "sources": sources, "exclude": exclude,
                                            "lines_per_document": self.cfg.lines_per_document, **counts})
                folders = [text / source for source in sources if (text / source).is_dir()]
                prepared = prepare_corpus(folders, tokenizer.path, out, workers=self.cfg.prepare_workers,
                                          overwrite=True)
                print(f"public text from {root} prepared in {out}\n{summary(counts)}\n"
                      f"{CorpusReport.from_dict(prepared.report).summary()}")
        return out


def _write_text(extraction: Extraction, text: Path) -> Path:
    """TEXT/<source>/<lang>/<source>.txt, a document per line, written beside and renamed into place, so a
    crash never leaves a folder that looks complete."""
    tmp = text.with_name(f"{text.name}.tmp-{secrets.token_hex(4)}")
    try:
        for (source, lang), docs in extraction.documents.items():
            if docs:
                folder = tmp / source / lang
                folder.mkdir(parents=True)
                (folder / f"{source}.txt").write_text("".join(f"{doc}\n" for doc in docs), encoding="utf-8")
        if text.exists():
            shutil.rmtree(text)
        os.replace(tmp, text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return text


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def summary(counts: dict[str, dict[str, dict[str, int]]]) -> str:
    """One line per source: documents per language, then what was dropped."""
    lines = []
    for source, per_lang in counts["documents"].items():
        langs = ", ".join(f"{lang} {n}" for lang, n in per_lang.items())
        dropped = {name: sum(counts[name].get(source, {}).values()) for name in ("duplicates", "excluded", "empty")}
        lines.append(f"  {source}: {sum(per_lang.values())} documents ({langs}); dropped {dropped['duplicates']} "
                     f"duplicates, {dropped['excluded']} eval sentences, {dropped['empty']} empty lines")
    return "\n".join(lines)
