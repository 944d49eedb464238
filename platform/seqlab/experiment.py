"""Composing experiments: where the YAML lives, the `seqlab_resource` resolver, config -> dataclasses."""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from seqlab.config import RunConfig, register_core_schemas
from seqlab.errors import ConfigError
from seqlab.registry import load_plugins

CONFIG_NAME = "config"


def experiments_dir() -> Path:
    """`$SEQLAB_EXPERIMENTS`, else the `experiments/` folder of the source tree seqlab runs from."""
    env = os.environ.get("SEQLAB_EXPERIMENTS")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "experiments"
    if not (path / f"{CONFIG_NAME}.yaml").is_file():
        raise ConfigError(f"experiments directory {path} has no {CONFIG_NAME}.yaml; "
                          "set SEQLAB_EXPERIMENTS to the folder holding the experiment configs")
    return path


def resource_path(relative: str) -> str:
    """Absolute path of a file shipped inside the seqlab package (the embedded corpus and tokenizer)."""
    path = Path(str(files("seqlab") / "resources" / relative))
    if not path.exists():
        raise ConfigError(f"${{seqlab_resource:{relative}}}: no such packaged resource {path}")
    return str(path)


def setup(plugins_dir: str | None = None) -> None:
    """Everything composition needs, in order: plugins registered (their schemas stored), core schemas, resolvers."""
    load_plugins(plugins_dir)
    register_core_schemas()
    if not OmegaConf.has_resolver("seqlab_resource"):
        OmegaConf.register_new_resolver("seqlab_resource", resource_path)


def plugins_dir_override(overrides: Sequence[str]) -> str | None:
    """The `plugins_dir=PATH` override, needed before Hydra runs because it adds config schemas."""
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+~") == "plugins_dir" and value not in ("", "null"):
            return value
    return None


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `experiments/config.yaml` with overrides, as `seqlab train` does (for tests and tools)."""
    setup(plugins_dir_override(overrides))
    with initialize_config_dir(config_dir=str(experiments_dir()), version_base=None):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Resolve interpolations and build the dataclasses; this runs every `__post_init__` validation."""
    try:
        run = OmegaConf.to_object(cfg)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key} is required but not set: add {err.full_key}=VALUE") from None
    if not isinstance(run, RunConfig):
        raise ConfigError(f"the composed config is a {type(run).__name__}, not a RunConfig: "
                          f"{CONFIG_NAME}.yaml must list run_schema first in its defaults")
    return run
