"""The contracts between the core and each plugin kind.

Objectives and architectures meet in the middle: an objective turns raw token ids into model-neutral
`Features` (inputs, targets); each architecture owns a converter from `Features` to its own tensors. So N
objectives and M architectures need N + M pieces of code, never N x M.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
from pytorch_lightning.strategies import Strategy

from seqlab.errors import ConfigError
from seqlab.registry import ARCHITECTURES
from seqlab.tokenizer import Tokenizer


@dataclass
class RowPlan:
    """What the sampler must cut for each row of a step, decided by the objective before any token is read.

    Planning first lets one batch mix children that need different raw lengths (T5-style corruption asks
    for more raw tokens than the model length) or a whole document instead of a packed slice (AlexaTM's CLM).
    """

    length: np.ndarray  # (n,) int64: raw tokens the row needs (document rows: at most this many)
    document: np.ndarray  # (n,) bool: one document from its start, instead of a slice of the packed stream
    task: np.ndarray  # (n,) int64: index into Objective.names of the (child) objective that gets the row

    def __post_init__(self) -> None:
        self.length = np.asarray(self.length, dtype=np.int64)
        self.document = np.asarray(self.document, dtype=bool)
        self.task = np.asarray(self.task, dtype=np.int64)

    @classmethod
    def uniform(cls, n: int, length: int, document: bool = False, task: int = 0) -> "RowPlan":
        return cls(np.full(n, length), np.full(n, document), np.full(n, task))

    def select(self, rows: np.ndarray) -> "RowPlan":
        return RowPlan(self.length[rows], self.document[rows], self.task[rows])


@dataclass
class Rows:
    """Raw token rows as the sampler cut them: packed slices (separated by [DOC]) or single documents."""

    tokens: np.ndarray  # (B, W) int64, right-padded with the pad id
    lengths: np.ndarray  # (B,) int64: real tokens per row; packed rows are always full (= plan.length)
    plan: RowPlan  # the plan of these B rows

    def select(self, rows: np.ndarray) -> "Rows":
        """The subset `rows` (bool mask or indices), trimmed to its own longest row."""
        lengths = self.lengths[rows]
        width = int(lengths.max()) if len(lengths) else 0
        return Rows(self.tokens[rows, :width], lengths, self.plan.select(rows))


@dataclass
class Features:
    """One batch of model-neutral examples. Arrays are right-padded with the pad id."""

    inputs: np.ndarray  # (B, Li) int64: what the model reads (encoder input / decoder-only prefix)
    input_lengths: np.ndarray  # (B,) int64
    targets: np.ndarray  # (B, Lt) int64: what the model must produce
    target_lengths: np.ndarray  # (B,) int64
    objective: np.ndarray  # (B,) int64: index into Objective.names, for per-objective losses
    # Packed rows hold several examples: the example (1, 2, ...) of each input and target position, 0 on
    # padding. Example k's inputs pair with its targets only; None: one example per row.
    input_segments: np.ndarray | None = None  # (B, Li) int64
    target_segments: np.ndarray | None = None  # (B, Lt) int64

    @property
    def packed(self) -> bool:
        return self.input_segments is not None


class Objective(Protocol):
    """Built by `OBJECTIVES.build(cfg, tokenizer=..., seq_len=...)`; runs inside data-loader workers.

    `seq_len` bounds what the model reads: inputs and targets are each at most seq_len tokens long.
    Everything is vectorised over the batch: no Python loop per token (or per example) on this path.
    """

    names: tuple[str, ...]  # one per (child) objective; losses are logged under these names

    def plan(self, n: int, rng: np.random.Generator) -> RowPlan:
        """Rows to cut for the next n sequences (all ranks of a step): same rng, same plan, everywhere."""

    def __call__(self, rows: Rows, rng: np.random.Generator) -> Features:
        """Raw rows (with their plan) -> Features; Features.objective is rows.plan.task."""


Batch = Mapping[str, Any]  # the tensors an architecture's converter produced, plus "objective" (B,)
FeatureConverter = Callable[[Features], dict[str, torch.Tensor]]


@dataclass
class LossOutput:
    loss_sum: torch.Tensor  # (B,) summed token cross-entropy per example
    tokens: torch.Tensor  # (B,) number of target tokens per example
    # (B,) summed auxiliary terms (e.g. z-loss) per example, added to the training objective only; None: none
    regulariser: torch.Tensor | None = None


class Architecture(Protocol):
    """An nn.Module built by `ARCHITECTURES.build(cfg, vocab_size=...)`; free of torch.distributed.

    Optional capabilities, looked up with `capability`, which names the architecture when one is missing:
    - `export_hf(tokenizer, out_dir, source) -> Path`: write the model in a Hugging Face layout (`seqlab export`),
      and `state_from_hf(hf_state, modules)`: that layout's weights under our names (warm starts);
    - classmethods `parameter_count(cfg, vocab_size)` and `training_flops(cfg, vocab_size, input_length,
      target_length)`: accounting without building (`seqlab info`, compute-matched `seqlab compare`);
    - classmethods `scaled(cfg, width, depth)` (size ladders) and `with_depth(cfg, depth)` (matched partners).
    """

    encoder_decoder: bool  # inputs go through an encoder (True) or are the prefix of one sequence (False)
    max_positions: int  # per stack for an encoder-decoder; the whole sequence for a decoder-only model
    blocks: Sequence[torch.nn.Module]  # the repeated blocks in forward order, for strategies to wrap

    @classmethod
    def feature_converter(cls, cfg: Any, *, pad_id: int) -> FeatureConverter:
        """A picklable callable that runs in data-loader workers."""

    def init_weights(self, seed: int = 0) -> None:
        """Initialise every parameter and buffer, also after a meta-device build (and on sharded parameters),
        identically for a given seed however the model is sharded."""

    def loss(self, batch: Batch) -> LossOutput: ...

    def target_logprobs(self, batch: Batch) -> torch.Tensor:
        """(B, Lt): teacher-forced log-probability of target token j of each row at column j (0 past the row's
        target length), from the converter's batch of Features whose targets are scored."""

    def target_scores(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """target_logprobs and (B, Lt) bool: whether each target is the most likely token at its position."""

    def generate(self, input_ids: torch.Tensor, input_lengths: torch.Tensor, max_new_tokens: int,
                 target_prefix: torch.Tensor | None = None,
                 stop: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 prefix_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: new tokens (B, N), right-padded after each row's EOS, and their counts (B,).
        input_ids (B, W) are model-neutral inputs, right-padded; target_prefix (B, P), right-padded to
        prefix_lengths (B,) (None: all P), is forced first; `stop` maps the new tokens so far (B, n) to the rows
        that are done."""


def capability(architecture: Any, name: str, what: str) -> Callable[..., Any]:
    """`architecture`'s optional method `name` (an Architecture class or model); a missing one is a
    ConfigError naming the architecture and what needed it."""
    method = getattr(architecture, name, None)
    if method is None:
        cls = architecture if isinstance(architecture, type) else type(architecture)
        names = [p.name for p in ARCHITECTURES if p.factory is cls]
        label = names[0] if names else cls.__name__
        raise ConfigError(f"architecture {label!r} does not support {what}: it provides no {name}")
    return method


@dataclass
class StrategySetup:
    """What a strategy plugin returns: the Lightning strategy, and how to parallelise the built model."""

    strategy: Strategy | str
    # Applied in LightningModule.configure_model with the strategy's device mesh (None for strategies without
    # one): e.g. FSDP2 shards each block of `model.blocks`, then the root.
    parallelize: Callable[[torch.nn.Module, Any], torch.nn.Module] | None = None
    # True: parallelize takes the model still on the meta device, and each rank then materialises and
    # initialises only its shards. False: it takes the materialised, initialised model.
    shards_meta: bool = False


class DataSource(Protocol):
    """Built by `DATA_SOURCES.build(cfg)`; returns the prepared corpus directory to train on."""

    def prepared_dir(self, tokenizer: Tokenizer, cache_dir: Path) -> Path: ...


@dataclass(frozen=True)
class ParameterCount:
    """An architecture's parameters, computed from its config without building it; tied weights count once."""

    embedding: int  # token embeddings (untied copies and LM head included) and position tables
    non_embedding: int  # everything else: blocks and norms

    @property
    def total(self) -> int:
        return self.embedding + self.non_embedding


@dataclass(frozen=True)
class FlopCount:
    """Training (forward + backward) matmul FLOPs of one example at given input and target lengths."""

    per_example: int
    tokens: int  # positions the model processes per example: the converter's num_tokens for that example
    six_n_per_token: int  # 6 x non-embedding parameters (Kaplan et al.), the usual approximation

    @property
    def per_token(self) -> float:
        return self.per_example / self.tokens
