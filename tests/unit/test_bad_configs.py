"""The bad-config suite: each bad value through `seqlab train` exits 2 with one message that names the field and
the value, and no traceback from inside Hydra, OmegaConf or torch."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from seqlab.cli import main

PREFIX = "seqlab train: error: "
# Hydra must not configure logging in this test process; the run directory goes to tmp_path.
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]

CASES = {
    # unknown plugin, preset or experiment
    "objective=nope": "objective='nope': no such objective config; choose one of: alexatm, alexatm_denoising, ",
    "architecture=gpt_huge": "architecture='gpt_huge': no such architecture config; choose one of: ",
    "data=nope": "data='nope': no such data config; choose one of: corpus, embedded, prepared, public_text, study ",
    "strategy=nope": "strategy='nope': no such strategy config; choose one of: ",
    "objective.children.0.objective.name=nope":
        "objective.children[0].objective.name='nope': unknown objective plugin 'nope'; registered objective plugins: ",
    "experiment=gpt_smal_gpu": "experiment='gpt_smal_gpu': no such experiment in ",
    # negative rates
    "objective.children.0.rate=-0.5": "objective.children[0].rate=-0.5: must be >= 0",
    "objective.children.1.rate=-1": "objective.children[1].rate=-1.0: must be >= 0",
    "objective.children.0.objective.noise_density=-0.1":
        "objective.children[0].objective: objective.noise_density=-0.1: must be in (0, 0.5)",
    "optim.lr=-1e-3": "optim.lr=-0.001: must be a finite number > 0",
    "data.alpha=-0.5": "data.alpha=-0.5: must be in (0, 1]",
    # sequences longer than the position table
    "data.seq_len=2048": "data.seq_len=2048: the objective's sequences do not fit the architecture: a 3787-token "
                         "sequence exceeds architecture.max_positions=1024; lower data.seq_len or raise max_positions",
    "architecture.max_positions=64": "data.seq_len=128: the objective's sequences do not fit the architecture: a "
                                     "235-token sequence exceeds architecture.max_positions=64",
    # missing tokenizer
    "tokenizer.path=/nonexistent.model": "tokenizer.path=/nonexistent.model: file not found. Train one on your corpus",
    "tokenizer.path=${seqlab_resource:tokenizer/none.model}":
        "tokenizer.path: ${seqlab_resource:tokenizer/none.model}: no such packaged resource ",
    # wrong types
    "data.batch_size=abc": "data.batch_size='abc': must be an integer",
    "trainer.max_steps=1.5": "trainer.max_steps=1.5: must be an integer",
    "data.batch_size=[1,2]": "data.batch_size=[1, 2]: must be an integer",
    "optim.lr=fast": "optim.lr='fast': must be a number",
    "seed=[0]": "seed=[0]: must be an integer",
    "trainer.progress_bar=maybe": "trainer.progress_bar='maybe': must be true or false",
    "data.languages=en": "data.languages='en': must be a list",
    "data.weights=5": "data.weights=5: must be a mapping",
    "+data.weights.web=heavy": "data.weights.web='heavy': must be a number",
    "objective.children.0.rate=high": "objective.children[0].rate='high': must be a number",
    "objective.children.1.objective.min_prefix=[0.2]":
        "objective.children[1].objective.min_prefix=[0.2]: must be a number",
    # keys and syntax
    "data.batch_sise=8": "data.batch_sise: no such field; to append to your config use +data.batch_sise=8",
    "data.batch_size=[1,": "cannot parse the override 'data.batch_size=[1,': ",
    "data.max_document_bytes=2": "data.max_document_bytes=2: must be >= 4",
    "objective=[1]": "objective=[1]: a config group takes one name, not a list; to sweep several, use -m objective=a,b",
    "trainer.devices=abc": "trainer.devices='abc': must be a count >= 1, -1 (all), 'auto', or device indices",
    "trainer.devices=0": "trainer.devices=0: must be a count >= 1",
    # values that passed a plain range check, or left the user to guess
    "trainer.precision=fp8": "trainer.precision='fp8': must be one of 32-true, 32, 16-mixed, ",
    "optim.lr=inf": "optim.lr=inf: must be a finite number > 0",
    "optim.lr=nan": "optim.lr=nan: must be a finite number > 0",
    "trainer.gradient_clip_val=inf": "trainer.gradient_clip_val=inf: must be a finite number > 0, or null",
    "data.languages=[xx]": "data.languages=['xx']: none of these languages is in the prepared corpus ",
    "data.seq_len=null": "data.seq_len: must be set (null is not allowed here)",
    "data.batch_size=1e3": "data.batch_size=1000.0: must be an integer (write 1000)",
    "trainer.preemption.signals=[SIGKILL]": "trainer.preemption.signals[0]='SIGKILL': must be a signal name such as ",
    "resume_allow=[optim.nope]": "resume_allow[0]='optim.nope': names no field of the config",
}


def _train(*overrides: str) -> int:
    """`seqlab train` in this process: the code main() returns, or that of the SystemExit raised from inside the
    run (where a bad value found while building the run's components ends it)."""
    try:
        return main(["train", *overrides, *QUIET])
    except SystemExit as exit:
        return exit.code


def _assert_one_clean_message(stderr: str, expected: str) -> None:
    # A value checked against the data comes after the corpus was prepared, under its progress bar.
    assert PREFIX in stderr and stderr[stderr.index(PREFIX):].startswith(PREFIX + expected), stderr
    assert stderr[:stderr.index(PREFIX)].strip() == "" or "prepare:" in stderr, stderr
    for sign in ("Traceback", 'File "', "omegaconf.", "hydra.errors", "torch", "HYDRA_FULL_ERROR"):
        assert sign not in stderr, stderr


@pytest.mark.parametrize("override", list(CASES))
def test_bad_config_exits_2_naming_field_and_value(override, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run that got as far as starting would write here, not into the repository
    hydra_full_error = os.environ.get("HYDRA_FULL_ERROR")
    assert _train(override, f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}") == 2
    captured = capsys.readouterr()
    _assert_one_clean_message(captured.err, CASES[override])
    assert os.environ.get("HYDRA_FULL_ERROR") == hydra_full_error  # set only while Hydra runs


def test_message_lists_what_would_be_valid(capsys):
    assert _train("objective=nope") == 2
    err = capsys.readouterr().err
    for choice in ("alexatm", "clm", "mixture", "ul2_paper", "`seqlab plugins`"):
        assert choice in err


@pytest.mark.slow
@pytest.mark.parametrize("override", ["data.batch_size=abc", "tokenizer.path=/nonexistent.model"])
def test_no_traceback_end_to_end(override, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run([sys.executable, "-m", "seqlab", "train", override, f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    _assert_one_clean_message(result.stderr, CASES[override])
    assert len(result.stderr.strip().splitlines()) <= 3  # the missing tokenizer's message says how to make one
