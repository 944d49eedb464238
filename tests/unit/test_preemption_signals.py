"""The pre-emption handlers: each configured signal is only recorded (the loop decides at the end of the step),
Lightning's own handlers are replaced and restored afterwards, and under SLURM rank 0 requeues the job."""
from __future__ import annotations

import os
import signal
import stat

import pytest
import pytorch_lightning as pl

from seqlab.config_fault import PreemptionConfig
from seqlab.errors import ConfigError
from seqlab.preemption import PreemptionSignals, agreed_signal, install, requeue


@pytest.fixture
def trainer():
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_a_signal_is_recorded_not_acted_on_and_the_old_handler_comes_back(trainer, name):
    before = signal.getsignal(signal.Signals[name])
    connector = install(trainer, PreemptionConfig())
    assert isinstance(trainer._signal_connector, PreemptionSignals)
    connector.register_signal_handlers()
    try:
        assert agreed_signal(trainer) is None
        os.kill(os.getpid(), signal.Signals[name])  # the process lives on: the handler only records it
        assert connector.received == signal.Signals[name]
        assert agreed_signal(trainer) == signal.Signals[name]
        assert not trainer.received_sigterm  # Lightning's loops never see it, and never exit with status 0
    finally:
        connector.teardown()
    assert signal.getsignal(signal.Signals[name]) == before


def test_no_signals_leaves_the_handlers_alone(trainer):
    before = signal.getsignal(signal.SIGTERM)
    connector = install(trainer, PreemptionConfig(signals=[]))
    connector.register_signal_handlers()
    try:
        assert signal.getsignal(signal.SIGTERM) == before
    finally:
        connector.teardown()


def test_uncatchable_and_unknown_signals_are_refused():
    with pytest.raises(ConfigError, match=r"trainer.preemption.signals\[1\]='SIGKILL': must be a signal name"):
        PreemptionConfig(signals=["SIGTERM", "SIGKILL"])
    with pytest.raises(ConfigError, match=r"trainer.preemption.signals\[0\]='TERM': must be a signal name"):
        PreemptionConfig(signals=["TERM"])
    with pytest.raises(ConfigError, match=r"trainer.preemption.exit_code=0: must be in \[1, 255\]"):
        PreemptionConfig(exit_code=0)


@pytest.fixture
def scontrol(tmp_path, monkeypatch):
    """A fake `scontrol` on PATH that records its arguments."""
    calls = tmp_path / "calls"
    script = tmp_path / "bin" / "scontrol"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_under_slurm_the_job_is_requeued(scontrol, monkeypatch):
    assert requeue(PreemptionConfig()) is None and not scontrol.exists()  # not under SLURM: nothing to do
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert requeue(PreemptionConfig(requeue=False)) is None and not scontrol.exists()
    assert requeue(PreemptionConfig()) == "SLURM job 4242 requeued"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert requeue(PreemptionConfig()) == "SLURM job 77_3 requeued"
    assert scontrol.read_text().splitlines() == ["requeue 4242", "requeue 77_3"]


def test_a_failing_requeue_is_reported_not_raised(scontrol, monkeypatch):
    script = scontrol.parent / "bin" / "scontrol"
    script.write_text("#!/bin/sh\necho 'Invalid job id specified' >&2\nexit 1\n")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with pytest.warns(UserWarning, match="scontrol requeue 4242 failed: Invalid job id specified"):
        assert requeue(PreemptionConfig()) == "requeueing SLURM job 4242 failed (Invalid job id specified)"
