"""Training budgets: what a run spends in FLOPs and tokens, counted per example from the architecture's own
accounting, before training (to choose a run's steps) and during it (the realised spend).

A step's cost depends on the lengths of its examples (AlexaTM's CLM rows hold one document each, of any
length), so a budget in FLOPs or tokens is not a fixed number of steps. The training stream depends only on
the seed and the step, so the exact lengths of every step can be replayed without a model: `StreamCosts`
runs the sampler and the objective for as many steps as a budget needs, and `steps_for` picks the step count
whose cumulative cost is closest to the budget. `FlopCounter` counts the same quantity in the training loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from seqlab.config import RunConfig
from seqlab.data.loader import StreamSpec, build_sampler
from seqlab.data.streams import Stream
from seqlab.errors import ConfigError
from seqlab.interfaces import capability
from seqlab.registry import ARCHITECTURES, DATA_SOURCES, OBJECTIVES
from seqlab.tokenizer import Tokenizer

UNITS = ("flops", "tokens", "steps")


def example_costs(architecture: Any, vocab_size: int, input_lengths: np.ndarray,
                  target_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training FLOPs and positions processed of each example, (n,) float64 each, from model-neutral lengths.

    The accounting is a closed formula of (input, target) lengths, evaluated once per distinct pair: a batch
    of fixed-shape denoising rows is one call, however large.
    """
    training_flops = capability(ARCHITECTURES.get(architecture.name).factory, "training_flops",
                                "FLOP accounting (use compare.budget=steps)")
    pairs, inverse = np.unique(np.stack([input_lengths, target_lengths], axis=1), axis=0, return_inverse=True)
    counts = [training_flops(architecture, vocab_size, int(s), int(t)) for s, t in pairs]
    flops = np.array([c.per_example for c in counts], dtype=np.float64)
    tokens = np.array([c.tokens for c in counts], dtype=np.float64)
    return flops[inverse.reshape(-1)], tokens[inverse.reshape(-1)]


def world_size(run: RunConfig) -> int:
    """Data-parallel ranks of a run, from its trainer config (every rank draws its own rows each step)."""
    devices = run.trainer.devices
    if isinstance(devices, str) and devices != "auto":
        devices = [d for d in devices.replace(" ", "").split(",") if d]
        devices = int(devices[0]) if len(devices) == 1 else devices
    if isinstance(devices, (list, tuple)):
        return len(devices) * run.trainer.num_nodes
    if isinstance(devices, int) and devices >= 1:
        return devices * run.trainer.num_nodes
    raise ConfigError(f"trainer.devices={devices!r}: a budget needs the number of ranks; give a count or indices")


class StreamCosts:
    """The model-neutral (input, target) lengths of every row of the training stream, per optimizer step,
    replayed exactly as the loader makes them (same sampler, same noise seeds), for all ranks."""

    def __init__(self, run: RunConfig, tokenizer: Tokenizer, cache_dir: Path | None = None):
        self.run = run
        self.objective = OBJECTIVES.build(run.objective, tokenizer=tokenizer, seq_len=run.data.seq_len)
        prepared = DATA_SOURCES.build(run.data).prepared_dir(tokenizer, Path(cache_dir or run.cache_dir))
        self.world = world_size(run)
        self.accumulate = run.trainer.accumulate_grad_batches
        separator = tokenizer.token_id("[DOC]")
        self._streams = [
            build_sampler(StreamSpec(prepared, run.data, separator, run.seed, rank=rank, num_replicas=self.world),
                          "train", self.objective.plan).iterate()
            for rank in range(self.world)]
        self.lengths: list[tuple[np.ndarray, np.ndarray]] = []  # per optimizer step: (rows,) inputs, targets

    def extend(self, steps: int) -> None:
        """Replay the stream until `steps` optimizer steps are known."""
        while len(self.lengths) < steps:
            inputs, targets = [], []
            for _ in range(self.accumulate):
                for rank, stream in enumerate(self._streams):
                    step, rows, _ = next(stream)
                    rng = np.random.default_rng((Stream.NOISE, self.run.seed, step, rank))
                    features = self.objective(rows, rng)
                    inputs.append(features.input_lengths)
                    targets.append(features.target_lengths)
            self.lengths.append((np.concatenate(inputs), np.concatenate(targets)))

    def cumulative(self, architecture: Any, vocab_size: int, unit: str, steps: int) -> np.ndarray:
        """(steps,) float64: the spend in `unit` after each of the first `steps` optimizer steps."""
        if unit == "steps":
            return np.arange(1, steps + 1, dtype=np.float64)
        self.extend(steps)
        S = np.concatenate([s for s, _ in self.lengths[:steps]])
        T = np.concatenate([t for _, t in self.lengths[:steps]])
        flops, tokens = example_costs(architecture, vocab_size, S, T)
        per_row = flops if unit == "flops" else tokens
        bounds = np.cumsum([len(s) for s, _ in self.lengths[:steps]])
        return np.cumsum(per_row)[bounds - 1]

    def steps_for(self, architecture: Any, vocab_size: int, unit: str, target: float,
                  max_steps: int) -> tuple[int, float]:
        """The step count whose cumulative spend is closest to `target`, and that spend. Replays up to
        `max_steps` steps; past them the spend is extrapolated at the replayed mean (realised spend is counted
        during training anyway)."""
        if unit == "steps":
            steps = max(1, int(round(target)))
            return steps, float(steps)
        probe = min(max_steps, 64)
        while True:
            cum = self.cumulative(architecture, vocab_size, unit, probe)
            if cum[-1] >= target or probe >= max_steps:
                break
            # Grow to the estimated need (plus a margin), not one step at a time.
            probe = min(max_steps, max(2 * probe, int(1.1 * target / (cum[-1] / probe)) + 1))
        if cum[-1] >= target:
            k = int(np.searchsorted(cum, target))  # first step at or past the target
            if k > 0 and target - cum[k - 1] < cum[k] - target:
                k -= 1
            return k + 1, float(cum[k])
        per_step = cum[-1] / len(cum)
        steps = len(cum) + int(round((target - cum[-1]) / per_step))
        return steps, float(cum[-1] + (steps - len(cum)) * per_step)


class FlopCounter(pl.Callback):
    """Logs `train/flops_seen`, the training FLOPs of every example trained on so far (all ranks), from the
    architecture's accounting of the batch's feature lengths; saved in checkpoints like tokens seen."""

    def __init__(self, architecture: Any, vocab_size: int) -> None:
        self.architecture = architecture
        self.vocab_size = vocab_size
        self.flops = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        lengths = batch["feature_lengths"]  # (2, B) numpy: input and target lengths of this rank's rows
        flops = float(example_costs(self.architecture, self.vocab_size, lengths[0], lengths[1])[0].sum())
        if trainer.world_size > 1:  # ranks draw different documents: their costs differ
            flops = float(trainer.strategy.reduce(torch.tensor(flops, dtype=torch.float64, device=pl_module.device),
                                                        reduce_op="sum"))
        self.flops += flops
        pl_module.log("train/flops_seen", self.flops)

    def state_dict(self) -> dict[str, Any]:
        return {"flops": self.flops}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.flops = float(state_dict["flops"])
