"""Composing experiments: where the YAML lives, the `seqlab_resource` resolver, config -> dataclasses.

Every problem with a composed config leaves this module as a ConfigError that names the field and the value
(Hydra's and OmegaConf's own errors are translated), so the CLI prints one line instead of a traceback.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from seqlab.config import RunConfig, register_core_schemas
from seqlab.errors import ConfigError, omegaconf_error
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


GROUPS = ("objective", "architecture", "strategy", "data", "trainer", "experiment")  # one choice each


def check_experiment(overrides: Sequence[str]) -> None:
    """Refuse `experiment=NAME` when experiments/experiment/ has no NAME.yaml. Hydra skips an optional group's
    missing file without a word, so a mistyped name would quietly train the default experiment instead.
    Also refuse a list for a config group: Hydra would merge several configs of the group, which no schema
    here describes (it fails deep inside Hydra)."""
    folder = experiments_dir() / "experiment"
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+~") in GROUPS and value.lstrip().startswith("["):
            raise ConfigError(f"{key.lstrip('+~')}={value}: a config group takes one name, not a list; to sweep "
                              f"several, use -m {key.lstrip('+~')}=a,b")
        if key.lstrip("+~") != "experiment" or not re.fullmatch(r"[\w./+-]+(,[\w./+-]+)*", value):
            continue  # not this group, or a sweep function such as choice(...) that Hydra expands itself
        for name in value.split(","):
            if name != "null" and not (folder / f"{name}.yaml").is_file():
                known = sorted(str(path.relative_to(folder).with_suffix("")) for path in folder.rglob("*.yaml"))
                raise ConfigError(f"experiment={name!r}: no such experiment in {folder}; choose one of: "
                                  f"{', '.join(known) or '(none)'}")


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `experiments/config.yaml` with overrides, as `seqlab train` does (for tests and tools)."""
    setup(plugins_dir_override(overrides))
    check_experiment(overrides)
    with initialize_config_dir(config_dir=str(experiments_dir()), version_base=None), composition_errors():
        return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Resolve interpolations and build the dataclasses; this runs every `__post_init__` validation."""
    return to_config(cfg, RunConfig, CONFIG_NAME, "run_schema")


def to_config(cfg: DictConfig, schema: type, config_name: str, schema_name: str) -> Any:
    """`cfg` as an instance of its structured `schema`, with OmegaConf's errors as ConfigErrors naming the field."""
    try:
        obj = OmegaConf.to_object(cfg)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{err.full_key} is required but not set: add {err.full_key}=VALUE") from None
    except OmegaConfBaseException as err:
        raise omegaconf_error(err) from None
    if not isinstance(obj, schema):
        raise ConfigError(f"the composed config is a {type(obj).__name__}, not a {schema.__name__}: "
                          f"{config_name}.yaml must list {schema_name} first in its defaults")
    return obj


@contextmanager
def composition_errors(hydra_raises: bool = False) -> Iterator[None]:
    """Turn Hydra's composition errors raised inside into ConfigErrors naming the field and the value.

    `hydra_raises`: for `hydra.main`, which otherwise prints such errors in its own format and exits 1 itself;
    HYDRA_FULL_ERROR makes it raise them instead (errors of the run itself then keep their whole traceback).
    """
    previous = os.environ.get("HYDRA_FULL_ERROR")
    if hydra_raises:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (ConfigCompositionException, OverrideParseException) as err:
        raise composition_error(err) from None
    finally:
        if hydra_raises and previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        elif hydra_raises:
            os.environ["HYDRA_FULL_ERROR"] = previous


def composition_error(err: ConfigCompositionException | OverrideParseException) -> ConfigError:
    """One Hydra error as a ConfigError: the group or field, the value, and what would be valid."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options is not None:
        group, _, name = err.missing_cfg_file.rpartition("/")
        return ConfigError(f"{group}={name!r}: no such {group} config; choose one of: {', '.join(err.options)} "
                           "(`seqlab plugins` describes the plugins)")
    if isinstance(err, OverrideParseException):
        return ConfigError(f"cannot parse the override {err.override!r}: {str(err).splitlines()[0]}")
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        message = omegaconf_error(cause)
        hint = [line[:1].lower() + line[1:] for line in str(err).splitlines()[1:]]  # "to append ... use +KEY=V"
        return ConfigError("; ".join([str(message), *hint])) if hint else message
    return ConfigError("\n".join(line for line in str(err).splitlines() if line.strip()))
