"""`seqlab data ...` commands. DataError and ConfigError propagate: the main CLI prints them without a traceback."""
from __future__ import annotations

import argparse
import os

from seqlab.data.corpus import LAYOUT, MAX_DOCUMENT_BYTES, CorpusReport
from seqlab.data.decontaminate import DEFAULT_NGRAM
from seqlab.data.plan import PART_BYTES
from seqlab.data.store import PreparedCorpus


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare training corpora")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    prepare = commands.add_parser(
        "prepare",
        help="tokenize corpora (text, JSONL, compressed, parquet, datasets folders) into memory-mapped shards",
        description=f"Tokenize corpora into memory-mapped token shards, one per (source, language), dropping exact "
                    f"duplicates and, with --decontaminate, documents that share an n-gram with evaluation sets.\n"
                    f"{LAYOUT}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("inputs", nargs="+", metavar="INPUT", help="corpus file or folder; each is one source")
    prepare.add_argument("--tokenizer", required=True, metavar="PATH", help="SentencePiece .model file")
    prepare.add_argument("--output", required=True, metavar="DIR",
                         help="prepared corpus folder to create (with --num-shards: this job's part folder)")
    prepare.add_argument("--source", metavar="NAME", help="one source name for all inputs (default: input names)")
    prepare.add_argument("--lang", metavar="CODE", help="language of documents no folder or record field assigns "
                                                        "(default: und)")
    prepare.add_argument("--text-field", default="text", metavar="NAME",
                         help="JSONL/parquet/Arrow field holding the text (default: %(default)s)")
    prepare.add_argument("--lang-field", default="lang", metavar="NAME",
                         help="optional field holding the language (default: %(default)s)")
    prepare.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                         help="encoding processes (default: %(default)s)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    prepare.add_argument("--max-document-bytes", type=int, default=MAX_DOCUMENT_BYTES, metavar="N",
                         help="cut longer lines into several documents (default: %(default)s)")
    prepare.add_argument("--no-dedup", dest="dedup", action="store_false",
                         help="keep exact duplicate documents (default: keep the first of each normalised text)")
    prepare.add_argument("--decontaminate", nargs="+", default=[], metavar="TASK_OR_FILE",
                         help="remove documents sharing an n-gram with these eval tasks (names, read from "
                              "--eval-data-root) or files (.txt, .jsonl, .tsv)")
    prepare.add_argument("--ngram", type=int, default=DEFAULT_NGRAM, metavar="N",
                         help="words per n-gram for --decontaminate (default: %(default)s)")
    prepare.add_argument("--eval-data-root", metavar="DIR", help="where eval tasks' data lies "
                                                                 "(default: $SEQLAB_EVAL_DATA)")
    prepare.add_argument("--part-bytes", type=int, default=PART_BYTES, metavar="N",
                         help="cut uncompressed files and parquet files larger than this into parts encoded "
                              "apart (default: %(default)s)")
    prepare.add_argument("--num-shards", type=int, default=1, metavar="N",
                         help="split the work across N jobs; each writes a part folder for `seqlab data merge`")
    prepare.add_argument("--shard-index", type=int, default=0, metavar="I", help="this job's share, 0..N-1")
    prepare.set_defaults(func=_prepare)

    merge = commands.add_parser("merge", help="join the part folders of a sharded `data prepare`",
                                description="Join the part folders that `seqlab data prepare --num-shards N "
                                            "--shard-index I` wrote, one per job, into one prepared corpus; the "
                                            "result is byte-identical to a single-job preparation.")
    merge.add_argument("parts", nargs="+", metavar="PART", help="part folder of every job")
    merge.add_argument("--output", required=True, metavar="DIR", help="prepared corpus folder to create")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    merge.set_defaults(func=_merge)

    stats = commands.add_parser("stats", help="documents, tokens, languages and sampling shares of a prepared corpus")
    stats.add_argument("corpus", metavar="DIR", help="prepared corpus folder")
    stats.add_argument("--alpha", type=float, metavar="A",
                       help="language sampling exponent (default: data.alpha's default, 0.5)")
    stats.add_argument("--plot", metavar="PNG", help="where to write the language-share plot "
                                                    "(default: DIR/languages.png)")
    stats.set_defaults(func=_stats)


def _prepare(args: argparse.Namespace) -> int:
    from seqlab.data.prepare import prepare_corpus

    result = prepare_corpus(args.inputs, args.tokenizer, args.output, source=args.source, lang=args.lang,
                            workers=args.workers, overwrite=args.overwrite, max_document_bytes=args.max_document_bytes,
                            text_field=args.text_field, lang_field=args.lang_field, dedup=args.dedup,
                            decontaminate=args.decontaminate, ngram=args.ngram, eval_data_root=args.eval_data_root,
                            part_bytes=args.part_bytes, num_shards=args.num_shards, shard_index=args.shard_index)
    if not isinstance(result, PreparedCorpus):
        print(f"part {args.shard_index} of {args.num_shards} written to {result}; when every job is done, run "
              f"`seqlab data merge PART... --output DIR`")
        return 0
    print_prepared(result)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from seqlab.data.merge import merge_parts

    print_prepared(merge_parts(args.parts, args.output, overwrite=args.overwrite))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from seqlab.data.stats import DEFAULT_ALPHA, corpus_stats, format_stats, plot_languages

    stats = corpus_stats(PreparedCorpus.open(args.corpus), DEFAULT_ALPHA if args.alpha is None else args.alpha)
    print(format_stats(stats))
    plot = plot_languages(stats, args.plot or os.path.join(args.corpus, "languages.png"))
    print(f"\nlanguage shares before and after alpha={stats.alpha:g} sampling plotted to {plot}")
    return 0


def print_prepared(prepared: PreparedCorpus) -> None:
    print(CorpusReport.from_dict(prepared.report).summary())
    contamination = prepared.manifest.get("preparation", {}).get("removed", {}).get("contamination", {})
    for name, removed in contamination.items():
        print(f"  eval set {name}: removed {removed['documents']:,} documents ({removed['tokens']:,} tokens)")
    print()
    print(format_shards(prepared))
    print(f"\nprepared corpus written to {prepared.path}")


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
