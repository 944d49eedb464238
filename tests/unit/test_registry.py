"""Registry contract: entry-point loading, plugins_dir, and the errors a user will hit."""
from dataclasses import dataclass
from importlib.metadata import EntryPoint

import pytest
from hydra.core.config_store import ConfigStore

from seqlab import registry
from seqlab.config import ObjectiveConfig
from seqlab.errors import PluginError
from seqlab.registry import ARCHITECTURES, DATA_SOURCES, OBJECTIVES, STRATEGIES, Registry, load_plugins


@dataclass
class _Cfg(ObjectiveConfig):
    rate: float = 0.5


def test_builtins_load_through_entry_points():
    load_plugins()
    assert OBJECTIVES.get("clm").module == "seqlab_plugins.objectives.clm"
    assert ARCHITECTURES.get("decoder_only").module == "seqlab_plugins.architectures.decoder_only.model"
    assert {"auto", "ddp"} <= set(STRATEGIES.names())
    assert {"corpus", "prepared"} <= set(DATA_SOURCES.names())


def test_register_stores_schema_in_config_store():
    reg = Registry("objective", "test_objective_group")
    reg.register("noisy", config=_Cfg, description="a test plugin")(lambda cfg: cfg.rate)
    node = ConfigStore.instance().load("test_objective_group/noisy.yaml").node
    assert node.name == "noisy" and node.rate == 0.5
    assert reg.build(_Cfg(name="noisy", rate=0.25)) == 0.25


def test_unknown_name_lists_registered_names():
    load_plugins()
    with pytest.raises(PluginError, match=r"unknown objective plugin 'nope'; registered objective plugins: .*clm"):
        OBJECTIVES.get("nope")


def test_duplicate_name_names_both_modules():
    reg = Registry("objective", "test_dup_group")

    def first(cfg):
        return 1

    reg.register("same", config=_Cfg)(first)
    second = type("Second", (), {"__module__": "other_package.plugins"})
    with pytest.raises(PluginError, match=r"registered by module .*test_registry and again by module other_package"):
        reg.register("same", config=_Cfg)(second)


def test_config_without_name_field_is_refused():
    @dataclass
    class NoName:
        x: int = 1

    with pytest.raises(PluginError, match="must be a dataclass with a `name` field"):
        Registry("objective", "g").register("x", config=NoName)


def test_failing_entry_point_names_itself_and_the_error(monkeypatch):
    broken = EntryPoint(name="broken_plugin", value="seqlab_no_such_module.plugin", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    monkeypatch.setattr(registry, "_loaded_entry_points", False)
    with pytest.raises(PluginError, match=r"entry point 'broken_plugin' = seqlab_no_such_module.plugin .*"
                                          r"ModuleNotFoundError: No module named 'seqlab_no_such_module'"):
        load_plugins()


PLUGIN_SOURCE = '''
from dataclasses import dataclass
from seqlab.config import ObjectiveConfig
from seqlab.registry import OBJECTIVES

@dataclass
class ReverseConfig(ObjectiveConfig):
    keep: int = 3

@OBJECTIVES.register("{name}", config=ReverseConfig)
class Reverse:
    """Test objective from a plugins_dir."""
    def __init__(self, cfg, *, tokenizer=None):
        self.cfg = cfg
'''


def test_plugins_dir_module_registers_and_composes(tmp_path):
    (tmp_path / "my_objective.py").write_text(PLUGIN_SOURCE.format(name="reverse_from_dir"))
    (tmp_path / "_private.py").write_text("raise RuntimeError('never imported')")
    from seqlab.experiment import compose_config, to_run_config

    cfg = compose_config([f"plugins_dir={tmp_path}", "objective=reverse_from_dir", "objective.keep=7"])
    run = to_run_config(cfg)
    assert type(run.objective).__name__ == "ReverseConfig" and run.objective.keep == 7
    assert OBJECTIVES.get("reverse_from_dir").description == "Test objective from a plugins_dir."


def test_plugins_dir_import_error_names_the_file(tmp_path):
    (tmp_path / "bad.py").write_text("import seqlab_missing_dependency\n")
    with pytest.raises(PluginError, match=r"bad.py failed to import: ModuleNotFoundError"):
        load_plugins(tmp_path)


def test_seqlab_plugins_command_lists_every_plugin(capsys):
    from seqlab.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for kind, name in [("objective", "clm"), ("architecture", "decoder_only"), ("strategy", "ddp"),
                       ("data source", "corpus")]:
        assert any(line.startswith(kind) and f" {name} " in line for line in out.splitlines()), (kind, name)


def test_presets_are_listed_and_selectable(capsys):
    from seqlab.cli import main
    from seqlab.experiment import compose_config, to_run_config

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("architecture") and " alexatm_20b " in line and "(preset of seq2seq)" in line
               for line in out.splitlines())
    run = to_run_config(compose_config(["architecture=alexatm_20b"]))
    assert (run.architecture.name, run.architecture.encoder_layers, run.architecture.decoder_layers) == ("seq2seq", 46, 32)
    with pytest.raises(PluginError, match="unknown architecture preset 'nope'; presets: .*seq2seq_base"):
        ARCHITECTURES.preset("nope")
