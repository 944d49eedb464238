"""`seqlab data stats`: what a prepared corpus holds and what training will draw from it.

Per source: documents, tokens and the documents the filters removed (duplicates, contamination). Per
language: tokens, its share of tokens (p) and its share after alpha sampling (q = p^alpha, normalised), the
sampler's own computation over the whole corpus (`seqlab.data.sampler.sampling_table`; training holds out
data.val_fraction of each shard first, which leaves the shares all but unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.config import DataConfig
from seqlab.data.sampler import ShardView, sampling_table
from seqlab.data.store import PreparedCorpus
from seqlab.errors import ConfigError

DEFAULT_ALPHA = next(f.default for f in fields(DataConfig) if f.name == "alpha")


@dataclass(frozen=True)
class CorpusStats:
    alpha: float
    sources: list[dict[str, Any]]  # source, documents, tokens, languages, duplicates, contaminated
    languages: list[dict[str, Any]]  # lang, documents, tokens, p, q
    decontamination: dict[str, dict[str, int]]  # eval set -> documents, tokens removed


def corpus_stats(prepared: PreparedCorpus, alpha: float = DEFAULT_ALPHA) -> CorpusStats:
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"--alpha={alpha!r}: must be in (0, 1], as data.alpha")
    removed = prepared.manifest.get("preparation", {}).get("removed", {})
    duplicates = removed.get("duplicates", {})
    sources = []
    for name in sorted({shard.source for shard in prepared.shards}):
        own = [shard for shard in prepared.shards if shard.source == name]
        sources.append({"source": name, "documents": sum(s.n_docs for s in own),
                        "tokens": sum(s.n_tokens for s in own), "languages": len(own),
                        "duplicates": duplicates.get(name, {}).get("documents", 0)})
    table = sampling_table([ShardView(s, np.arange(s.n_docs)) for s in prepared.shards], alpha, {})
    languages = []
    for lang, p, q in zip(table.languages, table.p, table.q):
        own = [shard for shard in prepared.shards if shard.lang == lang]
        languages.append({"lang": lang, "documents": sum(s.n_docs for s in own),
                          "tokens": sum(s.n_tokens for s in own), "p": float(p), "q": float(q)})
    return CorpusStats(alpha, sources, languages, removed.get("contamination", {}))


def format_stats(stats: CorpusStats) -> str:
    def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
        widths = [max(len(row[c]) for row in (header, *rows)) for c in range(len(header))]
        return ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
                for row in (header, *rows)]

    lines = table(("source", "documents", "tokens", "languages", "duplicates removed"),
                  [(s["source"], f"{s['documents']:,}", f"{s['tokens']:,}", str(s["languages"]),
                    f"{s['duplicates']:,}") for s in stats.sources])
    lines += [""] + table(("lang", "documents", "tokens", "token share", f"sampled (alpha={stats.alpha:g})"),
                          [(l["lang"], f"{l['documents']:,}", f"{l['tokens']:,}", f"{l['p']:.2%}", f"{l['q']:.2%}")
                           for l in stats.languages])
    if stats.decontamination:
        lines += [""] + table(("eval set", "documents removed", "tokens removed"),
                              [(name, f"{c['documents']:,}", f"{c['tokens']:,}")
                               for name, c in stats.decontamination.items()])
    return "\n".join(lines)


def plot_languages(stats: CorpusStats, path: str | Path) -> Path:
    """A bar chart of each language's share of tokens before and after alpha sampling, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    langs = sorted(stats.languages, key=lambda l: -l["p"])
    x = np.arange(len(langs))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(langs) + 2), 3.5))
    ax.bar(x - 0.2, [100 * l["p"] for l in langs], width=0.4, label="tokens")
    ax.bar(x + 0.2, [100 * l["q"] for l in langs], width=0.4, label=f"sampled, alpha={stats.alpha:g}")
    ax.set_xticks(x, [l["lang"] for l in langs])
    ax.set_ylabel("share (%)")
    ax.set_title("Language distribution")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
