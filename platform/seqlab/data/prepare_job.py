"""`seqlab prepare`: `seqlab data prepare` as a Hydra app, its options as config keys.

A cluster runs sharded preparation with whatever it already schedules Hydra jobs with: a multirun over
`shard_index` is one job per shard on any launcher (hydra-submitit-launcher's `submitit_slurm` on SLURM), and
each job writes the part folder `output` names, e.g. `output='parts/${shard_index}'`. `seqlab data merge`
then joins the parts. The config is `experiments/prepare.yaml` over the `PrepareJobConfig` schema.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from seqlab.data.corpus import MAX_DOCUMENT_BYTES
from seqlab.data.decontaminate import DEFAULT_NGRAM
from seqlab.data.plan import PART_BYTES
from seqlab.data.prepare import prepare_corpus
from seqlab.data.store import PreparedCorpus
from seqlab.errors import ConfigError

PREPARE_CONFIG = "prepare"


@dataclass
class PrepareJobConfig:
    """The arguments of `prepare_corpus`; `seqlab data prepare --help` describes each."""

    inputs: list[str] = field(default_factory=list)
    tokenizer: str = MISSING
    output: str = MISSING  # the prepared corpus; with num_shards > 1, this job's part folder
    source: Optional[str] = None
    lang: Optional[str] = None
    text_field: str = "text"
    lang_field: str = "lang"
    workers: int = 1  # a scheduler gives each job its CPUs: set workers to what it gave
    overwrite: bool = False
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    dedup: bool = True
    decontaminate: list[str] = field(default_factory=list)
    ngram: int = DEFAULT_NGRAM
    eval_data_root: Optional[str] = None
    part_bytes: int = PART_BYTES
    num_shards: int = 1
    shard_index: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("inputs=[]: name at least one corpus file or folder, e.g. inputs=[corpus/]")
        if self.workers < 1:
            raise ConfigError(f"workers={self.workers}: must be >= 1")
        if self.ngram < 1:
            raise ConfigError(f"ngram={self.ngram}: must be >= 1")
        if self.part_bytes < 1:
            raise ConfigError(f"part_bytes={self.part_bytes}: must be >= 1")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(f"num_shards={self.num_shards} shard_index={self.shard_index}: need num_shards >= 1 "
                              "and 0 <= shard_index < num_shards (a multirun: -m 'shard_index=range(N)')")


def register_prepare_schema() -> None:
    ConfigStore.instance().store(name="prepare_schema", node=PrepareJobConfig)


def to_prepare_config(cfg: DictConfig) -> PrepareJobConfig:
    """Resolve interpolations (`output='parts/${shard_index}'`) and validate."""
    from seqlab.experiment import to_config

    return to_config(cfg, PrepareJobConfig, PREPARE_CONFIG, "prepare_schema")


def run_prepare_job(job: PrepareJobConfig) -> PreparedCorpus | Path:
    options = asdict(job)
    inputs, tokenizer, output = options.pop("inputs"), options.pop("tokenizer"), options.pop("output")
    return prepare_corpus(inputs, tokenizer, output, **options)
