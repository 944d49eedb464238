"""Fixtures shared by unit and integration tests."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def embedded_corpus_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("seqlab") / "resources" / "corpus"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need it skip on a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer():
    """The tokenizer shipped with seqlab (4096 pieces); a module that needs another one overrides this fixture."""
    from seqlab.experiment import resource_path
    from seqlab.tokenizer import Tokenizer

    return Tokenizer(resource_path("tokenizer/embedded.model"))


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory, embedded_corpus_dir) -> Path:
    """A 2000-piece unigram model trained on the embedded corpus (a few seconds)."""
    from seqlab.tokenizer import TokenizerTrainConfig, train_tokenizer

    texts = [
        line.rstrip("\n")
        for path in sorted(embedded_corpus_dir.rglob("*.txt"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    out = tmp_path_factory.mktemp("tok") / "small.model"
    return train_tokenizer(texts, out, TokenizerTrainConfig(vocab_size=2000, num_sentinels=16))


@pytest.fixture
def compose_compare(tmp_path):
    """Compose experiments/compare.yaml as `seqlab compare` does, with smoke training, a per-test cache and no
    eval tasks unless overridden: `compose_compare("compare.budget=tokens", ...)` -> CompareRunConfig."""
    def compose(*overrides: str):
        from hydra import compose as hydra_compose, initialize_config_dir

        from seqlab.evaluation.compare import COMPARE_CONFIG, register_compare_schema
        from seqlab.experiment import experiments_dir, setup, to_run_config

        setup()
        register_compare_schema()
        with initialize_config_dir(config_dir=str(experiments_dir()), version_base=None):
            cfg = hydra_compose(config_name=COMPARE_CONFIG, overrides=[
                "trainer=smoke", f"cache_dir={tmp_path / 'cache'}", "eval.tasks=[]", *overrides])
        return to_run_config(cfg)

    return compose
