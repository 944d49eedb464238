"""Plugin registries: one per kind, each storing its plugins' config schemas in Hydra's ConfigStore.

The core never imports a built-in plugin by name. Plugin modules are imported through the entry-point group
`seqlab.plugins` (built-ins are declared there exactly like a third-party package's) or from a `plugins_dir`
folder; importing a plugin module registers it, which is the only side effect such an import may have.

The contract tests (tests/unit/test_contracts.py) build every registered plugin, so a new one is covered without
a test of its own, from `Registry.example(name)`: its config defaults, with the values it gave as
`register(..., example={...})` where the defaults cannot build alone (a mixture needs children, a summarization
task its file). The values merge over the defaults like a YAML override and are validated only when an example
is built, so a mixture's example may name plugins registered after it. An eval task's example reads its data
below the tests' data root, in the layout its readers document.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, fields, is_dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from seqlab.errors import ConfigError, PluginError

ENTRY_POINT_GROUP = "seqlab.plugins"
T = TypeVar("T")


@dataclass(frozen=True)
class Plugin:
    kind: str
    name: str
    factory: Callable[..., Any]
    config: type
    module: str
    description: str
    example: Mapping[str, Any]  # field values over the config defaults for contract tests (`Registry.example`)


class Registry(Generic[T]):
    """Name -> plugin for one kind; the kind's Hydra config group is `group`."""

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._plugins: dict[str, Plugin] = {}
        self._presets: dict[str, tuple[Any, str]] = {}

    def register(self, name: str, *, config: type, description: str | None = None,
                 example: Mapping[str, Any] | None = None) -> Callable[[T], T]:
        """Decorator: `@OBJECTIVES.register("clm", config=ClmConfig)` on a class or factory function.

        The factory is called as `factory(cfg, **context)` with an instance of `config`. The config dataclass
        needs a `name` field; its stored node has `name` set, so a composed config says which plugin built it.
        `example`: field values over the defaults that make the config contract tests build (see the module
        docstring); None when the defaults do.
        """
        names = {f.name for f in fields(config)} if is_dataclass(config) else set()
        if "name" not in names:
            raise PluginError(f"{self.kind} plugin {name!r}: config {config!r} must be a dataclass with a `name` field")
        unknown = sorted(set(example or {}) - names)
        if unknown:
            raise PluginError(f"{self.kind} plugin {name!r}: example sets {', '.join(unknown)}, not fields of "
                              f"{config.__name__}")

        def decorator(factory: T) -> T:
            module = getattr(factory, "__module__", "?")
            previous = self._plugins.get(name)
            if previous is not None and previous.module != module:
                raise PluginError(
                    f"duplicate {self.kind} plugin {name!r}: registered by module {previous.module} "
                    f"and again by module {module}; rename one of them"
                )
            text = description or next(iter((factory.__doc__ or "").strip().splitlines()), "")
            self._plugins[name] = Plugin(self.kind, name, factory, config, module, text.strip(), dict(example or {}))
            node = OmegaConf.structured(config)
            node.name = name
            ConfigStore.instance().store(group=self.group, name=name, node=node, provider=module)
            return factory

        return decorator

    def register_preset(self, name: str, cfg: Any, description: str = "") -> None:
        """A named configuration of a registered plugin, selectable like one (`architecture=seq2seq_base`)."""
        plugin = self.get(cfg.name)
        if name in self._plugins or (name in self._presets and self._presets[name][0] != cfg):
            raise PluginError(f"duplicate {self.kind} name {name!r}: a preset of {plugin.name} and another "
                              f"{'plugin' if name in self._plugins else 'preset'} share it")
        self._presets[name] = (cfg, description)
        ConfigStore.instance().store(group=self.group, name=name, node=OmegaConf.structured(cfg),
                                     provider=plugin.module)

    def preset(self, name: str) -> Any:
        """The config of preset `name` (a copy is not made: treat it as read-only)."""
        try:
            return self._presets[name][0]
        except KeyError:
            known = ", ".join(sorted(self._presets)) or "(none registered)"
            raise PluginError(f"unknown {self.kind} preset {name!r}; presets: {known}") from None

    def presets(self) -> dict[str, tuple[Any, str]]:
        """name -> (config, description), sorted by name."""
        return dict(sorted(self._presets.items()))

    def example(self, name: str) -> Any:
        """A new config of plugin `name` for contract tests: its defaults with the plugin's `example` values."""
        plugin = self.get(name)
        node = OmegaConf.merge(OmegaConf.structured(plugin.config), {**plugin.example, "name": name})
        return OmegaConf.to_object(node)

    def get(self, name: str) -> Plugin:
        try:
            return self._plugins[name]
        except KeyError:
            known = ", ".join(sorted(self._plugins)) or "(none registered)"
            raise PluginError(f"unknown {self.kind} plugin {name!r}; registered {self.kind} plugins: {known}") from None

    def build(self, cfg: Any, **context: Any) -> Any:
        """Build the plugin named by `cfg.name` from its (already validated) config object."""
        plugin = self.get(cfg.name)
        if not isinstance(cfg, plugin.config):
            raise ConfigError(
                f"{self.group}.name={cfg.name}: expected a {plugin.config.__name__} config, got {type(cfg).__name__}"
            )
        return plugin.factory(cfg, **context)

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self._plugins[name] for name in self.names())

    def __contains__(self, name: str) -> bool:
        return name in self._plugins


OBJECTIVES: Registry = Registry("objective", "objective")
ARCHITECTURES: Registry = Registry("architecture", "architecture")
STRATEGIES: Registry = Registry("strategy", "strategy")
DATA_SOURCES: Registry = Registry("data source", "data")
EVAL_TASKS: Registry = Registry("eval task", "eval_task")
REGISTRIES = (OBJECTIVES, ARCHITECTURES, STRATEGIES, DATA_SOURCES, EVAL_TASKS)

_loaded_entry_points = False
_loaded_dirs: set[Path] = set()


def load_plugins(plugins_dir: str | Path | None = None) -> None:
    """Import every `seqlab.plugins` entry point, then every module in `plugins_dir` (idempotent)."""
    global _loaded_entry_points
    if not _loaded_entry_points:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                ep.load()
            except PluginError:
                raise
            except Exception as err:  # noqa: BLE001 - any import failure is reported with its origin
                dist = ep.dist.name if ep.dist else "unknown distribution"
                raise PluginError(
                    f"plugin entry point {ep.name!r} = {ep.value} (from {dist}) failed to import: "
                    f"{type(err).__name__}: {err}"
                ) from err
        _loaded_entry_points = True
    if plugins_dir is not None:
        _load_dir(Path(plugins_dir))


def _load_dir(folder: Path) -> None:
    folder = folder.expanduser().resolve()
    if folder in _loaded_dirs:
        return
    if not folder.is_dir():
        raise ConfigError(f"plugins_dir={folder}: not a directory")
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"seqlab_user_plugins.{folder.name}.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except PluginError:
            del sys.modules[module_name]
            raise
        except Exception as err:  # noqa: BLE001
            del sys.modules[module_name]
            raise PluginError(f"plugins_dir module {path} failed to import: {type(err).__name__}: {err}") from err
    _loaded_dirs.add(folder)
