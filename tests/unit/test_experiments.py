"""Every file in experiments/ composes and instantiates; bad values fail with the field and value named."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from seqlab.config import RunConfig
from seqlab.errors import ConfigError
from seqlab.experiment import compose_config, experiments_dir, to_run_config
from seqlab.registry import ARCHITECTURES, DATA_SOURCES, OBJECTIVES, STRATEGIES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.data.public_sources import EVAL_SETS, FOLDERS

GROUPS = ("objective", "architecture", "strategy", "data", "trainer")


def _overrides_for_every_file() -> list[list[str]]:
    root = experiments_dir()
    cases = []
    for group in (*GROUPS, "experiment"):
        for path in sorted((root / group).glob("*.yaml")):
            cases.append([f"{group}={path.stem}"])
    return cases


def _public_data_root(root: Path) -> Path:
    """Empty folders in the layouts `public_text` checks for: enough to compose and validate its config."""
    for folder in (*FOLDERS.values(), *(Path(p).parent for patterns in EVAL_SETS.values() for p in patterns)):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def _instantiate(run: RunConfig) -> None:
    tokenizer = Tokenizer(run.tokenizer.path)
    objective = OBJECTIVES.build(run.objective, tokenizer=tokenizer, seq_len=run.data.seq_len)
    plan = objective.plan(8, np.random.default_rng(0))
    assert objective.names and len(plan.length) == 8 and (plan.task < len(objective.names)).all()
    model = ARCHITECTURES.build(run.architecture, vocab_size=tokenizer.vocab_size)
    assert sum(p.numel() for p in model.parameters()) > 0 and len(model.blocks) >= 1
    assert STRATEGIES.build(run.strategy).strategy is not None
    assert hasattr(DATA_SOURCES.build(run.data), "prepared_dir")


def test_experiment_folder_has_presets_and_experiments():
    root = experiments_dir()
    assert (root / "config.yaml").is_file()
    # Every plugin is selectable by name through the ConfigStore; these groups also ship YAML presets.
    for group in ("architecture", "strategy", "data", "trainer", "experiment"):
        assert list((root / group).glob("*.yaml")), f"experiments/{group}/ has no YAML"


def _compare_experiment(overrides: list[str]) -> bool:
    """An experiment file for `seqlab compare` (it sets `compare.*`), composed over compare.yaml."""
    group, _, name = overrides[0].partition("=")
    path = experiments_dir() / group / f"{name}.yaml"
    return group == "experiment" and "compare" in (yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize("overrides", _overrides_for_every_file(), ids=lambda o: o[0])
def test_every_experiment_file_composes_and_instantiates(overrides, tmp_path, monkeypatch):
    # data=study reads its root from the variable that also points the evaluation at its data.
    monkeypatch.setenv("SEQLAB_EVAL_DATA", str(_public_data_root(tmp_path)))
    if _compare_experiment(overrides):
        from hydra import compose, initialize_config_dir

        from seqlab.evaluation.compare import COMPARE_CONFIG, CompareRunConfig, register_compare_schema

        compose_config()  # plugins and core schemas
        register_compare_schema()
        with initialize_config_dir(config_dir=str(experiments_dir()), version_base=None):
            run = to_run_config(compose(config_name=COMPARE_CONFIG, overrides=[*overrides, "data=study"]))
        assert isinstance(run, CompareRunConfig) and run.compare.sizes
    else:
        run = to_run_config(compose_config(overrides))
    assert isinstance(run, RunConfig)
    _instantiate(run)


@pytest.mark.parametrize("group, registry", [("objective", OBJECTIVES), ("architecture", ARCHITECTURES),
                                             ("strategy", STRATEGIES), ("data", DATA_SOURCES)])
def test_every_registered_plugin_is_selectable_by_name(group, registry, tmp_path):
    compose_config()  # loads the plugins
    required = {("data", "corpus"): [f"data.paths=[{tmp_path}]"], ("data", "prepared"): [f"data.path={tmp_path}"],
                ("data", "public_text"): [f"data.root={_public_data_root(tmp_path)}"],
                ("objective", "mixture"): ["objective.children=[{objective:{name:clm},rate:1.0}]"]}
    for name in registry.names():
        run = to_run_config(compose_config([f"{group}={name}", *required.get((group, name), [])]))
        assert getattr(run, group).name == name


def test_default_is_the_embedded_demo():
    run = to_run_config(compose_config())
    assert (run.objective.name, run.architecture.name, run.strategy.name, run.data.name) == (
        "mixture", "decoder_only", "auto", "corpus")
    assert [(c.objective.name, c.rate) for c in run.objective.children] == [("alexatm_denoising", 0.8), ("clm", 0.2)]
    assert Path(run.data.paths[0]).name == "corpus" and Path(run.tokenizer.path).is_file()


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr=-1.0: must be a finite number > 0"),
    ("optim.min_lr=1.0", "optim.min_lr=1.0: must be in [0, optim.lr="),
    ("data.alpha=1.5", "data.alpha=1.5: must be in (0, 1]"),
    ("data.seq_len=4", "data.seq_len=4: must be >= 8"),
    ("+data.weights.wiki=-2", "data.weights.wiki=-2.0: must be >= 0"),
    ("architecture.n_heads=3", "architecture.n_heads=3: must divide architecture.d_model=128"),
    ("trainer.logger=wandb", "trainer.logger='wandb': must be csv or tensorboard"),
    ("strategy=ddp", None),
    ("data.paths=[]", "data.paths=[]: must list at least one file or folder"),
])
def test_bad_values_name_field_and_value(override, message):
    if message is None:
        to_run_config(compose_config([override]))
        return
    with pytest.raises(ConfigError) as err:
        to_run_config(compose_config([override]))
    assert message in str(err.value)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"^trainer.max_steps='many': must be an integer$"):
        compose_config(["trainer.max_steps=many"])


def test_unknown_plugin_lists_the_options():
    with pytest.raises(ConfigError, match=r"^objective='nope': no such objective config; choose one of: .*\bclm\b"):
        compose_config(["objective=nope"])


def test_missing_required_value_names_the_key():
    with pytest.raises(ConfigError, match=r"data.path is required but not set: add data.path=VALUE"):
        to_run_config(compose_config(["data=prepared"]))


def test_sequences_longer_than_the_position_table_fail_at_startup(tmp_path):
    from seqlab.train import build_components

    # Denoising on a decoder-only model reads inputs plus targets: 108 + 128 tokens at seq_len 128.
    run = to_run_config(compose_config(["architecture.max_positions=200", f"cache_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match=r"data.seq_len=128: the objective's sequences do not fit the architecture: "
                                          r"a 235-token sequence exceeds architecture.max_positions=200"):
        build_components(run)
