"""Removing evaluation data from training data: documents sharing any n-gram with an evaluation set.

The rule is GPT-3's and the paper's: a training document is contaminated when any n consecutive words of it
(n = 13 by default), after `textnorm.normalize`, also occur in an evaluation example. Scripts written without
spaces count characters as words, so a Japanese example is matched by 13 consecutive characters. An
evaluation text shorter than n words cannot be matched and is counted as such in the report.

An evaluation set is an eval-task name (a preset or a task of `seqlab eval`, read from the eval data root
with zero shots: its prompts, references and candidates) or a file: `.txt` (a text per line),
`.jsonl`/`.json` or `.tsv` (every string field of every item).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from seqlab.data.textnorm import ngram_hashes, normalize
from seqlab.errors import ConfigError, DataError, PluginError

MAX_SETS = 64  # a document's contamination is one uint64 bit mask over the sets
DEFAULT_NGRAM = 13


@dataclass(frozen=True)
class EvalNgrams:
    """The hashed n-grams of named evaluation sets; cheap to pickle into worker processes."""

    n: int
    names: tuple[str, ...]
    grams: np.ndarray  # (n_unique,) sorted uint64 n-gram hashes
    masks: np.ndarray  # (n_unique,) uint64: bit i set when set names[i] has the n-gram
    texts: tuple[int, ...]  # per set: texts read
    short: tuple[int, ...]  # per set: texts shorter than n words, which cannot be matched

    def flags(self, normalized: Sequence[str]) -> np.ndarray:
        """(n_docs,) uint64: the sets each normalised document shares an n-gram with, as bits."""
        out = np.zeros(len(normalized), dtype=np.uint64)
        if len(self.grams) == 0:
            return out
        grams, documents = ngram_hashes(normalized, self.n)
        at = np.minimum(np.searchsorted(self.grams, grams), len(self.grams) - 1)
        hit = self.grams[at] == grams
        np.bitwise_or.at(out, documents[hit], self.masks[at[hit]])
        return out

    def sets_of(self, mask: int) -> list[str]:
        return [name for i, name in enumerate(self.names) if mask >> i & 1]

    def digest(self) -> str:
        """Identifies the n-gram sets, so parts prepared apart can be checked to have used the same ones."""
        h = hashlib.sha256(repr((self.n, self.names)).encode())
        h.update(self.grams.tobytes())
        h.update(self.masks.tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"n": self.n, "sets": {name: {"texts": texts, "shorter_than_n": short}
                                      for name, texts, short in zip(self.names, self.texts, self.short)},
                "ngrams": len(self.grams), "sha256": self.digest()}


def load_eval_ngrams(specs: Sequence[str], n: int = DEFAULT_NGRAM, data_root: str | Path | None = None) -> EvalNgrams:
    """The n-grams of every evaluation set in `specs` (eval-task names or files, see the module)."""
    if type(n) is not int or n < 1:
        raise ConfigError(f"--ngram={n!r}: must be an integer >= 1 (the paper uses 13)")
    if not specs:
        raise ConfigError("--decontaminate: give at least one eval-task name or file")
    if len(specs) > MAX_SETS:
        raise ConfigError(f"--decontaminate: {len(specs)} evaluation sets; at most {MAX_SETS} at once")
    names, all_grams, all_masks, texts, short = [], [], [], [], []
    for i, spec in enumerate(specs):
        name, items = _eval_texts(spec, data_root)
        if name in names:
            raise ConfigError(f"--decontaminate: two evaluation sets are named {name!r}")
        normalized = [normalize(text) for text in items]
        grams, _ = ngram_hashes(normalized, n)
        names.append(name)
        texts.append(len(normalized))
        short.append(sum(len(text.split()) < n for text in normalized))
        grams = np.unique(grams)
        all_grams.append(grams)
        all_masks.append(np.full(len(grams), np.uint64(1) << np.uint64(i), dtype=np.uint64))
    grams, masks = np.concatenate(all_grams), np.concatenate(all_masks)
    unique, inverse = np.unique(grams, return_inverse=True)
    merged = np.zeros(len(unique), dtype=np.uint64)
    np.bitwise_or.at(merged, inverse, masks)  # an n-gram of several sets carries all their bits
    return EvalNgrams(n, tuple(names), unique, merged, tuple(texts), tuple(short))


def _eval_texts(spec: str, data_root: str | Path | None) -> tuple[str, list[str]]:
    path = Path(spec)
    if path.is_file():
        return path.stem, list(_file_texts(path))
    if path.suffix or os.sep in spec:
        raise DataError(f"--decontaminate {spec}: no such file (and not an eval-task name)")
    return spec, _task_texts(spec, data_root)


def _file_texts(path: Path) -> Iterator[str]:
    if path.suffix in (".jsonl", ".json", ".tsv"):
        from seqlab.evaluation.records import read_records

        for _, item in read_records(path, "one item per line (JSONL) or row (TSV with a header)"):
            yield from _strings(item)
        return
    try:
        yield from path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"--decontaminate {path}: cannot read as UTF-8 text ({err})") from None


def _task_texts(name: str, data_root: str | Path | None) -> list[str]:
    from seqlab.evaluation.cli import DATA_ROOT_ENV
    from seqlab.evaluation.tasks import resolve_tasks
    from seqlab.registry import EVAL_TASKS, load_plugins

    load_plugins()
    root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    try:
        (cfg,) = resolve_tasks([name]).values()
    except (ConfigError, PluginError) as err:  # an unknown name: say both readings of the argument
        raise ConfigError(f"--decontaminate {name}: neither a file nor an eval task ({err})") from None
    examples = EVAL_TASKS.build(dataclasses.replace(cfg, shots=0)).examples(Path(root) if root else None)
    texts: list[str] = []
    for example in examples:
        # The zero-shot prompt holds the item's text (with the template's few words around it), so every task
        # kind is covered whatever fields it keeps; references and candidates are what the model must produce.
        texts += [example.prompt, *example.contexts, *example.candidates, *_strings(example.fields)]
        texts += [example.reference] if example.reference else []
    return texts


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []
