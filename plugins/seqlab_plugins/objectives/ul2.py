"""`ul2`: UL2's mixture of denoisers (Tay et al. 2022): span corruption at several span lengths and densities,
plus a prefix LM, each announced to the model by a mode token put first in its inputs.

kind r (regular, [NLU]): T5 span corruption, short spans, low density.
kind x (extreme, [NLG]): long spans or high density.
kind s (sequential, [S2S]): prefix LM.
Spans are laid out as T5 lays them out (uniform random compositions of the noise and kept tokens); the paper
draws span lengths around the mean instead, which changes the spread of span lengths, not their mean.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from seqlab.config import ObjectiveConfig
from seqlab.errors import ConfigError, require
from seqlab.interfaces import Objective
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.objectives.mixture import Mixture
from seqlab_plugins.objectives.prefix_lm import PrefixLM, PrefixLMConfig
from seqlab_plugins.objectives.t5_span_corruption import T5SpanCorruption, T5SpanCorruptionConfig

MODE_TOKENS = {"r": "[NLU]", "x": "[NLG]", "s": "[S2S]"}


@dataclass
class UL2Denoiser:
    kind: str = "r"  # r | x | s; the mode token follows from it
    mean_noise_span_length: float = 3.0  # ignored by s
    noise_density: float = 0.15  # ignored by s
    rate: float = 1.0  # relative; rates are normalised over the denoisers

    @property
    def label(self) -> str:
        """Loss name: r_3_0.15, x_64_0.5, s."""
        if self.kind == "s":
            return "s"
        return f"{self.kind}_{self.mean_noise_span_length:g}_{self.noise_density:g}"


def _paper_mix() -> List[UL2Denoiser]:
    # UL2's seven denoisers at uniform rates: 2 R, 4 X, 1 S, so about 1/7 of rows are prefix LM. Rates are
    # config fields: a preset or override changes the mix without code.
    return [
        UL2Denoiser("r", 3.0, 0.15), UL2Denoiser("r", 8.0, 0.15),
        UL2Denoiser("x", 3.0, 0.5), UL2Denoiser("x", 8.0, 0.5),
        UL2Denoiser("x", 64.0, 0.15), UL2Denoiser("x", 64.0, 0.5),
        UL2Denoiser("s"),
    ]


@dataclass
class UL2Config(ObjectiveConfig):
    denoisers: List[UL2Denoiser] = field(default_factory=_paper_mix)

    def __post_init__(self) -> None:
        require(len(self.denoisers) > 0, "objective.denoisers", [], "must list at least one denoiser")
        for i, d in enumerate(self.denoisers):
            where = f"objective.denoisers[{i}]"
            require(d.kind in MODE_TOKENS, f"{where}.kind", d.kind, "must be r, x or s")
            require(d.rate >= 0, f"{where}.rate", d.rate, "must be >= 0")
            if d.kind != "s":
                require(0.0 < d.noise_density < 1.0, f"{where}.noise_density", d.noise_density, "must be in (0, 1)")
                require(d.mean_noise_span_length >= 1.0, f"{where}.mean_noise_span_length",
                        d.mean_noise_span_length, "must be >= 1")
        rates = [d.rate for d in self.denoisers]
        require(sum(rates) > 0, "objective.denoisers[*].rate", rates, "must not all be 0")
        labels = [d.label for d in self.denoisers]
        require(len(set(labels)) == len(labels), "objective.denoisers[*]", labels,
                "must be distinct (raise a denoiser's rate instead of listing it twice)")


def _denoiser(d: UL2Denoiser, tokenizer: Tokenizer, seq_len: int) -> Objective:
    mode = MODE_TOKENS[d.kind]
    if d.kind == "s":
        return PrefixLM(PrefixLMConfig(name="prefix_lm", mode_token=mode), tokenizer=tokenizer, seq_len=seq_len)
    cfg = T5SpanCorruptionConfig(name="t5_span_corruption", noise_density=d.noise_density,
                                 mean_noise_span_length=d.mean_noise_span_length, mode_token=mode)
    return T5SpanCorruption(cfg, tokenizer=tokenizer, seq_len=seq_len)


@OBJECTIVES.register("ul2", config=UL2Config)
def build_ul2(cfg: UL2Config, *, tokenizer: Tokenizer, seq_len: int) -> Mixture:
    """UL2's mixture of denoisers: R and X span corruption and S prefix LM, each with its mode token."""
    children = []
    for i, d in enumerate(cfg.denoisers):
        try:
            children.append((d.label, _denoiser(d, tokenizer, seq_len)))
        except ConfigError as err:  # e.g. too few sentinels for this denoiser at this seq_len: say which one
            raise ConfigError(f"objective.denoisers[{i}] ({d.label}): {err}") from None
    return Mixture(children, [d.rate for d in cfg.denoisers])
