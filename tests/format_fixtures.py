"""Corpus fixtures: the same multilingual documents written in every format `seqlab data prepare` reads."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from seqlab.data.corpus import Document

TEXTS = ["The council met on Tuesday.", "Der Rat tagte am Dienstag.", "評議会は火曜日に開かれた。",
         "انعقد المجلس يوم الثلاثاء.", "परिषद की बैठक मंगलवार को हुई।", "a line with \"quotes\" and \\ slashes",
         "தமிழ் உரை", "un texte français, avec des accents : é è à"]
LANGS = ["en", "de", "ja", "ar", "hi", "en", "ta", "fr"]
DOCS = [Document(lang, f"{text} #{i}") for i, (text, lang) in enumerate(zip(TEXTS * 40, LANGS * 40))]


def jsonl_bytes(docs, text_field="text", lang_field="lang") -> bytes:
    return "".join(json.dumps({text_field: d.text, lang_field: d.lang, "id": i}, ensure_ascii=False) + "\n"
                   for i, d in enumerate(docs)).encode()


def write_formats(root: Path) -> dict[str, Path]:
    """The same documents in every supported format; the text-only ones get `en` from their folder."""
    root.mkdir(parents=True, exist_ok=True)
    payload = jsonl_bytes(DOCS)
    paths = {"jsonl": root / "docs.jsonl", "jsonl.gz": root / "docs.jsonl.gz", "json.gz": root / "c4-docs.json.gz",
             "jsonl.zst": root / "docs.jsonl.zst", "parquet": root / "docs.parquet", "arrow": root / "docs_arrow"}
    paths["jsonl"].write_bytes(payload)
    paths["jsonl.gz"].write_bytes(gzip.compress(payload))
    # mC4's files: several gzip members back to back.
    half = payload.index(b"\n", len(payload) // 2) + 1
    paths["json.gz"].write_bytes(gzip.compress(payload[:half]) + gzip.compress(payload[half:]))
    paths["jsonl.zst"].write_bytes(zstandard.ZstdCompressor().compress(payload))
    table = pa.table({"text": [d.text for d in DOCS], "lang": [d.lang for d in DOCS], "id": range(len(DOCS))})
    pq.write_table(table, paths["parquet"], row_group_size=64)
    from datasets import Dataset

    Dataset.from_dict(table.to_pydict()).save_to_disk(str(paths["arrow"]), max_shard_size="8KB")
    return paths
