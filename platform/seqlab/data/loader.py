"""From a prepared corpus to model batches: sampler -> objective -> architecture converter, in workers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from seqlab.config import DataConfig
from seqlab.data.sampler import PackingSampler, Planner, sampling_table, split_views
from seqlab.data.streams import Stream
from seqlab.data.store import PreparedCorpus
from seqlab.errors import ConfigError
from seqlab.interfaces import FeatureConverter, Objective

SPLIT_SEED = 0  # which documents are held out depends on the data only, never on the run's seed


@dataclass
class StreamSpec:
    """Everything a worker needs to rebuild its sampler; small and picklable (no memory maps)."""

    prepared_dir: Path
    data: DataConfig
    separator_id: int
    seed: int
    rank: int = 0
    num_replicas: int = 1


def open_views(spec: StreamSpec, split: str):
    corpus = PreparedCorpus.open(spec.prepared_dir)
    shards = [s for s in corpus.shards if spec.data.languages is None or s.lang in spec.data.languages]
    if corpus.shards and not shards:
        present = sorted({s.lang for s in corpus.shards})
        raise ConfigError(f"data.languages={list(spec.data.languages)}: none of these languages is in the prepared "
                          f"corpus {spec.prepared_dir}, which has {', '.join(present)}")
    train, val = split_views(shards, spec.data.val_fraction, seed=SPLIT_SEED)
    return train if split == "train" else val


def build_sampler(spec: StreamSpec, split: str, planner: Planner) -> PackingSampler:
    views = open_views(spec, split)
    table = sampling_table(views, spec.data.alpha, spec.data.weights)
    # Validation draws from its own fixed seed so every evaluation sees the same batches.
    seed = spec.seed if split == "train" else SPLIT_SEED
    return PackingSampler(views, table.probs, planner=planner, batch_size=spec.data.batch_size,
                          separator_id=spec.separator_id, seed=seed,
                          num_replicas=spec.num_replicas, rank=spec.rank)


class PackedBatches(IterableDataset):
    """Collated batches (the DataLoader runs with batch_size=None). Train is endless; validation is finite."""

    def __init__(self, spec: StreamSpec, split: str, objective: Objective, converter: FeatureConverter,
                 state: Mapping[str, Any] | None = None, num_batches: int | None = None):
        self.spec = spec
        self.split = split
        self.objective = objective
        self.converter = converter
        self.state = state
        self.num_batches = num_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        consumer, consumers = (info.id, info.num_workers) if info else (0, 1)
        sampler = build_sampler(self.spec, self.split, self.objective.plan)
        if self.state is not None:
            sampler.load_state_dict(self.state)
        for step, rows, state in sampler.iterate(consumer, consumers):
            if self.num_batches is not None and step >= self.num_batches:
                return
            # Noise depends on (seed, step, rank) only, so a resumed stream reproduces it exactly.
            rng = np.random.default_rng((Stream.NOISE, sampler.seed, step, self.spec.rank))
            features = self.objective(rows, rng)
            batch = self.converter(features)
            batch["objective"] = torch.from_numpy(features.objective)
            # Model-neutral lengths, kept on the host (a numpy array is not moved to the device): what the
            # FLOP accounting of the batch needs, whichever architecture trains on it.
            batch["feature_lengths"] = np.stack([features.input_lengths, features.target_lengths])  # (2, B)
            batch["sampler_state"] = state
            yield batch
