"""The contracts between the core and each plugin kind.

Objectives and architectures meet in the middle: an objective turns raw token ids into model-neutral
`Features` (inputs, targets); each architecture owns a converter from `Features` to its own tensors. So N
objectives and M architectures need N + M pieces of code, never N x M.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch
from pytorch_lightning.strategies import Strategy

from seqlab.tokenizer import Tokenizer


@dataclass
class Features:
    """One batch of model-neutral examples. Arrays are right-padded with the pad id."""

    inputs: np.ndarray  # (B, Li) int64: what the model reads (encoder input / decoder-only prefix)
    input_lengths: np.ndarray  # (B,) int64
    targets: np.ndarray  # (B, Lt) int64: what the model must produce
    target_lengths: np.ndarray  # (B,) int64
    objective: np.ndarray  # (B,) int64: index into Objective.names, for per-objective losses


class Objective(Protocol):
    """Built by `OBJECTIVES.build(cfg, tokenizer=...)`; runs inside data-loader workers."""

    names: tuple[str, ...]  # one per child objective; losses are logged under these names

    def raw_length(self, seq_len: int) -> int:
        """How many raw tokens per sequence the sampler must pack for a model length of `seq_len`."""

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> Features:
        """tokens: (B, raw_length) int64 packed sequences -> Features. Vectorised over the batch."""


Batch = Mapping[str, Any]  # the tensors an architecture's converter produced, plus "objective" (B,)
FeatureConverter = Callable[[Features], dict[str, torch.Tensor]]


@dataclass
class LossOutput:
    loss_sum: torch.Tensor  # (B,) summed token cross-entropy per example
    tokens: torch.Tensor  # (B,) number of target tokens per example


class Architecture(Protocol):
    """An nn.Module built by `ARCHITECTURES.build(cfg, vocab_size=...)`; free of torch.distributed."""

    blocks: torch.nn.ModuleList  # the repeated blocks, for wrapping by sharding strategies

    @classmethod
    def feature_converter(cls, cfg: Any, *, pad_id: int) -> FeatureConverter:
        """A picklable callable that runs in data-loader workers."""

    def init_weights(self) -> None: ...

    def loss(self, batch: Batch) -> LossOutput: ...


@dataclass
class StrategySetup:
    """What a strategy plugin returns: the Lightning strategy, and how to parallelise the built model."""

    strategy: Strategy | str
    parallelize: Callable[[torch.nn.Module], torch.nn.Module] | None = None


class DataSource(Protocol):
    """Built by `DATA_SOURCES.build(cfg)`; returns the prepared corpus directory to train on."""

    def prepared_dir(self, tokenizer: Tokenizer, cache_dir: Path) -> Path: ...
