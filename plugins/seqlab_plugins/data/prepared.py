"""`prepared`: a corpus already made by `seqlab data prepare`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from seqlab.config import DataConfig
from seqlab.data.store import MANIFEST
from seqlab.errors import ConfigError
from seqlab.registry import DATA_SOURCES
from seqlab.tokenizer import Tokenizer


@dataclass
class PreparedDataConfig(DataConfig):
    path: str = MISSING  # the --output folder of `seqlab data prepare`


@DATA_SOURCES.register("prepared", config=PreparedDataConfig)
class PreparedSource:
    """Memory-mapped token files made by `seqlab data prepare`."""

    def __init__(self, cfg: PreparedDataConfig):
        self.cfg = cfg

    def prepared_dir(self, tokenizer: Tokenizer, cache_dir: Path) -> Path:
        path = Path(self.cfg.path).expanduser()
        if not (path / MANIFEST).is_file():
            raise ConfigError(f"data.path={self.cfg.path}: no {MANIFEST} there; make one with "
                              f"`seqlab data prepare INPUT ... --tokenizer {tokenizer.path} --output {self.cfg.path}`")
        return path
