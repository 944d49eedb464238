"""`seqlab data ...` commands. DataError and ConfigError propagate: the main CLI prints them without a traceback."""
from __future__ import annotations

import argparse
import os

from seqlab.data.corpus import LAYOUT, MAX_DOCUMENT_BYTES, CorpusReport
from seqlab.data.prepare import prepare_corpus
from seqlab.data.store import PreparedCorpus


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare training corpora")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    prepare = commands.add_parser(
        "prepare",
        help="tokenize text/JSONL corpora into memory-mapped shards",
        description=f"Tokenize corpora into memory-mapped token shards, one per (source, language).\n{LAYOUT}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus file or folder; each is one source")
    prepare.add_argument("--tokenizer", required=True, metavar="PATH", help="SentencePiece .model file")
    prepare.add_argument("--output", required=True, metavar="DIR", help="prepared corpus folder to create")
    prepare.add_argument("--source", metavar="NAME", help="one source name for all inputs (default: input names)")
    prepare.add_argument("--lang", metavar="CODE", help="language of documents no folder or JSONL field assigns "
                                                        "(default: und)")
    prepare.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                         help="encoding processes (default: %(default)s)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    prepare.add_argument("--max-document-bytes", type=int, default=MAX_DOCUMENT_BYTES, metavar="N",
                         help="cut longer lines into several documents (default: %(default)s)")
    prepare.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    prepared = prepare_corpus(args.inputs, args.tokenizer, args.output, source=args.source, lang=args.lang,
                              workers=args.workers, overwrite=args.overwrite,
                              max_document_bytes=args.max_document_bytes)
    print(CorpusReport.from_dict(prepared.report).summary())
    print()
    print(format_shards(prepared))
    print(f"\nprepared corpus written to {prepared.path}")
    return 0


def format_shards(prepared: PreparedCorpus) -> str:
    """A table of shards with documents and tokens, plus a total row."""
    rows = [(shard.source, shard.lang, f"{shard.n_docs:,}", f"{shard.n_tokens:,}") for shard in prepared.shards]
    rows.append(("total", "", f"{sum(s.n_docs for s in prepared.shards):,}",
                 f"{sum(s.n_tokens for s in prepared.shards):,}"))
    header = ("source", "lang", "documents", "tokens")
    widths = [max(len(row[col]) for row in (header, *rows)) for col in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) if col < 2 else cell.rjust(w) for col, (cell, w) in enumerate(zip(row, widths)))
        for row in (header, *rows)
    )
