"""`seqlab info PRESET`: parameters and training FLOPs of a named architecture preset, counted analytically.

Nothing is built: each architecture class counts from its config (`Architecture.parameter_count` and
`training_flops`), so even alexatm_20b is described instantly. The plugin that registers a preset may also
register `InfoDefaults` for it: the vocabulary size and example lengths to count with when the command line
does not say (the real vocabulary comes from the tokenizer at build time), and the presets to show beside it
(a seq2seq preset's decoder-only partners).
"""
from __future__ import annotations

from dataclasses import dataclass

from seqlab.errors import ConfigError, PluginError, require
from seqlab.interfaces import FlopCount, ParameterCount, capability
from seqlab.registry import ARCHITECTURES


@dataclass(frozen=True)
class InfoDefaults:
    vocab_size: int  # a reference size for counting, e.g. the paper's tokenizer
    input_length: int  # tokens the model reads per example (encoder input / decoder-only prefix)
    target_length: int  # tokens it must produce
    partners: tuple[str, ...] = ()  # presets to count beside this one at the same vocabulary and lengths


_DEFAULTS: dict[str, InfoDefaults] = {}


def register_info_defaults(preset: str, defaults: InfoDefaults) -> None:
    """Called by the plugin module that registers `preset`; the same defaults twice is a no-op (re-import)."""
    previous = _DEFAULTS.get(preset)
    if previous is not None and previous != defaults:
        raise PluginError(f"info defaults for architecture preset {preset!r} registered twice, differently: "
                          f"{previous} and {defaults}")
    _DEFAULTS[preset] = defaults


def info_defaults(preset: str) -> InfoDefaults | None:
    return _DEFAULTS.get(preset)


@dataclass(frozen=True)
class PresetCount:
    name: str
    description: str
    parameters: ParameterCount
    flops: FlopCount


def count_preset(name: str, vocab_size: int, input_length: int, target_length: int) -> PresetCount:
    """Count preset `name` analytically; an unknown name raises the registry's PluginError listing presets."""
    cfg = ARCHITECTURES.preset(name)
    factory = ARCHITECTURES.get(cfg.name).factory
    parameter_count = capability(factory, "parameter_count", "parameter accounting (seqlab info)")
    training_flops = capability(factory, "training_flops", "FLOP accounting (seqlab info)")
    return PresetCount(name, ARCHITECTURES.presets()[name][1], parameter_count(cfg, vocab_size),
                       training_flops(cfg, vocab_size, input_length, target_length))


def human(n: float) -> str:
    """19_750_000_000 -> '19.75B'; K, M, B, T (1e12), P (1e15), E (1e18)."""
    for scale, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.2f}"


HEADER = ("preset", "embedding", "non-embedding", "total", "FLOPs/example", "FLOPs/token", "6N/token")


def _row(count: PresetCount) -> tuple[str, ...]:
    p, f = count.parameters, count.flops
    return (count.name, human(p.embedding), human(p.non_embedding), human(p.total), human(f.per_example),
            human(f.per_token), human(f.six_n_per_token))


def describe(name: str, vocab_size: int | None = None, input_length: int | None = None,
             target_length: int | None = None) -> str:
    """The `seqlab info` report; None takes the preset's registered default."""
    cfg = ARCHITECTURES.preset(name)
    defaults = info_defaults(name)
    if defaults is None and None in (vocab_size, input_length, target_length):
        raise ConfigError(f"architecture preset {name!r} registers no info defaults; pass --vocab-size, "
                          "--input-length and --target-length")
    vocab_note = " (the preset's reference; a built model takes its tokenizer's)" if vocab_size is None else ""
    vocab_size = defaults.vocab_size if vocab_size is None else vocab_size
    input_length = defaults.input_length if input_length is None else input_length
    target_length = defaults.target_length if target_length is None else target_length
    require(vocab_size >= 1, "vocab_size", vocab_size, "must be >= 1")
    rows = [_row(count_preset(name, vocab_size, input_length, target_length))]
    notes = []
    for partner in defaults.partners if defaults else ():
        try:
            count = count_preset(partner, vocab_size, input_length, target_length)
        except ConfigError as err:  # e.g. lengths beyond the partner's position table
            notes.append(f"  {partner}: not counted at these lengths: {err}")
            continue
        rows.append(_row(count))
        notes.append(f"  {partner}: {count.description}")
    widths = [max(len(row[i]) for row in (HEADER, *rows)) for i in range(len(HEADER))]
    table = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in (HEADER, *rows)]
    lines = [
        f"{name}: {ARCHITECTURES.presets()[name][1]} [{cfg.name}]",
        f"counted at vocab_size={vocab_size:,}{vocab_note}, "
        f"input_length={input_length:,}, target_length={target_length:,}",
        "FLOPs: training (forward + backward) matmul FLOPs; per token = per example / positions processed; "
        "6N = 6 x non-embedding parameters",
        "",
        *table,
    ]
    if notes:
        lines += ["", "decoder-only partners:", *notes]
    return "\n".join(lines)
