"""Cluster faults on 2 ranks (gloo, CPU): pre-emption and kills of the whole process group under DDP, a kill in
the middle of a sharded FSDP2 save, resuming on another world size (2 -> 1 -> 2 ranks), a kill under gradient
accumulation, and the divergence guard's verdict on every rank. Each interrupted run is compared with an
uninterrupted one: the metrics bitwise, the data stream by the sampler state its checkpoints hold. Interruption
points are drawn from a fixed seed and named in every failure message."""
from __future__ import annotations

import random
import signal
import textwrap
from pathlib import Path

import pytest
import torch
from launch import launch, metrics_table, resumed_from, tail, train_command, train_losses, train_steps

from seqlab.config_fault import EXIT_PREEMPTED
from seqlab.fault import inspect_checkpoint
from seqlab.sharded import COMPLETE

SEED = 6
COMMON = ("trainer=smoke", "trainer.deterministic=true", "data.val_batches=1", "resume=auto")
TWO_RANKS = ("trainer.accelerator=cpu", "trainer.devices=2")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _reference(tmp_path: Path, cache: Path, *overrides: str) -> list[dict[str, str]]:
    log = tmp_path / "reference.log"
    assert launch(train_command(tmp_path / "reference", cache, *overrides), log) == 0, tail(log)
    return metrics_table(tmp_path / "reference")


@pytest.mark.distributed
def test_ddp_pre_empted_on_rank_0_then_its_process_group_killed_resumes_bitwise(tmp_path, cache):
    # experiment=ddp_cpu: the shipped 2-process gloo experiment.
    overrides = (*COMMON, "experiment=ddp_cpu", "data.batch_size=2", "trainer.max_steps=9",
                 "trainer.checkpoint_every_n_steps=4", "trainer.val_check_interval=5")
    expected = _reference(tmp_path, cache, *overrides)
    assert "run finished after 9 steps" in (tmp_path / "reference.log").read_text()
    rng = random.Random(SEED)
    term_row, kill_row = rng.choice([2, 3]), rng.choice([6, 7])  # before and after checkpoint 4
    points = f"seed {SEED}: SIGTERM to rank 0 after row {term_row}, SIGKILL of the group after row {kill_row}"
    run = tmp_path / "run"
    command = train_command(run, cache, *overrides)

    # Only rank 0 gets the signal: rank 1 learns of it from the flag the ranks reduce after every step.
    log = tmp_path / "preempted.log"
    status = launch(command, log, lambda: term_row in train_steps(run), sig=signal.SIGTERM)
    assert status == EXIT_PREEMPTED, f"{points}: exit status {status}\n{tail(log)}"
    assert log.read_text().count("seqlab train: stopped by SIGTERM after step") == 1, f"{points}\n{tail(log)}"
    assert "Traceback" not in log.read_text(), f"{points}\n{tail(log)}"

    log = tmp_path / "killed.log"
    assert launch(command, log, lambda: kill_row in train_steps(run), group=True) == -signal.SIGKILL, tail(log)
    assert resumed_from(log) in (term_row, term_row + 1), f"{points}\n{tail(log)}"

    log = tmp_path / "final.log"
    assert launch(command, log) == 0, tail(log)
    assert resumed_from(log) == 4, f"{points}\n{tail(log)}"
    assert metrics_table(run) == expected, points


# Makes every sharded save stop for a while after all ranks wrote their shards, before it is sealed: the kill
# then lands mid-save for certain, however fast the machine writes.
SLOW_SEAL = textwrap.dedent("""
    import time
    from seqlab_plugins.strategies import fsdp2

    real_seal = fsdp2.seal_sharded

    def slow_seal(temp, path, world_size):
        if path.name == "step0000004.ckpt":
            time.sleep(30)
        real_seal(temp, path, world_size)

    fsdp2.seal_sharded = slow_seal
""")
FSDP2 = (*COMMON, "strategy=fsdp2", "objective=clm", "objective.packed=true", "trainer.max_steps=6",
         "trainer.checkpoint_every_n_steps=2", "trainer.val_check_interval=3", "trainer.keep_last_checkpoints=3")


@pytest.fixture(scope="module")
def fsdp2_reference(tmp_path_factory, cache) -> Path:
    """An uninterrupted 2-rank FSDP2 run with sharded checkpoints at steps 2, 4 and 6."""
    folder = tmp_path_factory.mktemp("fsdp2")
    _reference(folder, cache, *FSDP2, *TWO_RANKS, "data.batch_size=2")
    return folder / "reference"


def _sampler_state(checkpoint: Path) -> dict:
    meta = torch.load(checkpoint / "meta.pt", weights_only=True)
    return meta["SeqLabDataModule"]["sampler"]


@pytest.mark.distributed
def test_fsdp2_kill_mid_sharded_save_leaves_the_previous_checkpoint_and_resumes_bitwise(tmp_path, cache,
                                                                                       fsdp2_reference):
    expected = metrics_table(fsdp2_reference)
    # Torch distributed checkpoint's layout: its metadata and one file per rank, with the completion marker.
    files = {p.name for p in (fsdp2_reference / "checkpoints" / "step0000002.ckpt").iterdir()}
    assert {".metadata", "meta.pt", "__0_0.distcp", "__1_0.distcp", COMPLETE} <= files, files
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow_seal.py").write_text(SLOW_SEAL)
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    log = tmp_path / "killed.log"
    command = train_command(run, cache, *FSDP2, *TWO_RANKS, "data.batch_size=2")
    partial = checkpoints / ".step0000004.ckpt.partial"
    # Rank 0 writes Lightning's meta.pt into the folder once every rank's shards are written.
    status = launch(command + [f"plugins_dir={plugins}"], log, lambda: (partial / "meta.pt").is_file(), group=True)
    assert status == -signal.SIGKILL, tail(log)
    assert {p.name for p in partial.iterdir()} >= {"__0_0.distcp", "__1_0.distcp"}  # both shards, not sealed
    assert not (checkpoints / "step0000004.ckpt").exists()
    assert inspect_checkpoint(checkpoints / "step0000002.ckpt").step == 2  # the previous one, complete

    log = tmp_path / "final.log"
    assert launch(command, log) == 0, tail(log)
    assert f"removing {partial}: a checkpoint save that was cut short" in log.read_text()
    assert resumed_from(log) == 2, tail(log)
    assert metrics_table(run) == expected
    assert all((checkpoints / f"step{s:07d}.ckpt" / COMPLETE).is_file() for s in (2, 4, 6))


@pytest.mark.distributed
def test_a_two_rank_checkpoint_resumes_on_one_rank_and_back_with_the_same_global_rows(tmp_path, cache,
                                                                                      fsdp2_reference):
    """2 ranks x 2 rows -> 1 rank x 4 rows -> 2 ranks x 2 rows: every sampler step draws the same 4 global
    rows, and FSDP2 reshards the sharded checkpoint on load."""
    reference = fsdp2_reference / "checkpoints"
    expected = train_losses(fsdp2_reference)

    one = tmp_path / "one_rank"
    log = tmp_path / "one_rank.log"
    assert launch(train_command(one, cache, *FSDP2, "trainer.accelerator=cpu", "trainer.devices=1", "data.batch_size=4",
                                "trainer.max_steps=4", f"resume={reference / 'step0000002.ckpt'}"), log) == 0, tail(log)
    two = tmp_path / "two_ranks"
    log = tmp_path / "two_ranks.log"
    assert launch(train_command(two, cache, *FSDP2, *TWO_RANKS, "data.batch_size=2",
                                f"resume={one / 'checkpoints' / 'step0000004.ckpt'}"), log) == 0, tail(log)

    assert _sampler_state(one / "checkpoints" / "step0000004.ckpt") == _sampler_state(reference / "step0000004.ckpt")
    assert _sampler_state(two / "checkpoints" / "step0000006.ckpt") == _sampler_state(reference / "step0000006.ckpt")
    continued = {**train_losses(one), **train_losses(two)}
    assert sorted(continued) == [3, 4, 5, 6]
    for step, loss in continued.items():  # one process sums a batch's rows in another order than two ranks
        assert loss == pytest.approx(expected[step], abs=1e-5), (step, continued, expected)
    assert '"trainer.devices": [2, 1]' in (one / "resumes.jsonl").read_text()


def test_gradient_accumulation_killed_between_checkpoints_resumes_bitwise(tmp_path, cache):
    """Two micro-batches per step, rows every 3 steps and checkpoints every 4: a resume at step 4 or 8 lands
    between rows, so the per-objective sums since the last row must come back from the checkpoint too."""
    overrides = (*COMMON, "architecture=seq2seq_tiny", "architecture.dropout=0.1", "data.batch_size=4",
                 "trainer.accumulate_grad_batches=2", "trainer.log_every_n_steps=3",
                 "trainer.checkpoint_every_n_steps=4", "trainer.keep_last_checkpoints=2", "trainer.max_steps=10",
                 "trainer.val_check_interval=5")
    expected = _reference(tmp_path, cache, *overrides)
    kill_row = random.Random(SEED).choice([6, 9])
    run = tmp_path / "run"
    command = train_command(run, cache, *overrides)
    log = tmp_path / "killed.log"
    assert launch(command, log, lambda: kill_row in train_steps(run)) == -signal.SIGKILL, tail(log)
    log = tmp_path / "final.log"
    assert launch(command, log) == 0, tail(log)
    assert resumed_from(log) == (4 if kill_row == 6 else 8), f"seed {SEED}: SIGKILL after row {kill_row}"
    assert metrics_table(run) == expected, f"seed {SEED}: SIGKILL after row {kill_row}"
    # The checkpoint it resumed from counts among the 2 kept; the last step is always saved.
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.ckpt", "step0000008.ckpt",
                                                                 "step0000010.ckpt"}


NAN_ARCHITECTURE = textwrap.dedent("""
    from dataclasses import dataclass

    import torch.distributed as dist

    from seqlab.interfaces import LossOutput
    from seqlab.registry import ARCHITECTURES
    from seqlab_plugins.architectures.decoder_only.model import DecoderOnly, DecoderOnlyConfig


    @dataclass
    class NanConfig(DecoderOnlyConfig):
        nan_at_call: int = 3


    @ARCHITECTURES.register("nan_decoder_only", config=NanConfig)
    class NanDecoderOnly(DecoderOnly):
        \"\"\"decoder_only whose training loss is NaN at one call, on rank 0 only.\"\"\"

        def __init__(self, cfg, *, vocab_size):
            super().__init__(cfg, vocab_size=vocab_size)
            self.calls = 0

        def loss(self, batch):
            out = super().loss(batch)
            if self.training:
                self.calls += 1
                if self.calls == self.cfg.nan_at_call and (not dist.is_initialized() or dist.get_rank() == 0):
                    out = LossOutput(out.loss_sum * float("nan"), out.tokens)
            return out
""")


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
@pytest.mark.parametrize("action", ["stop", "skip"])
def test_divergence_on_one_rank_gets_the_same_verdict_on_every_rank(tmp_path, cache, strategy, action):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nan_architecture.py").write_text(NAN_ARCHITECTURE)
    run = tmp_path / "run"
    log = tmp_path / "run.log"
    status = launch(train_command(run, cache, f"plugins_dir={plugins}", "architecture=nan_decoder_only",
                                  f"strategy={strategy}", *TWO_RANKS, "data.batch_size=2", "trainer=smoke",
                                  "trainer.max_steps=5", "trainer.checkpoint_every_n_steps=2",
                                  "trainer.val_check_interval=5", f"trainer.divergence.action={action}"), log)
    text = log.read_text()
    assert "Traceback" not in text, tail(log)
    if action == "stop":
        assert status == 2, tail(log)
        # Rank 1's losses were finite; the summed ones were not, on both ranks: the message comes once.
        assert text.count("seqlab train: error: divergence at step 3: ") == 1, tail(log)
        assert "[rank 1]" not in text
        assert inspect_checkpoint(run / "checkpoints" / "step0000002.ckpt").step == 2
    else:
        assert status == 0, tail(log)
        skipped = [float(r["train/skipped_steps"]) for r in metrics_table(run) if r.get("train/skipped_steps")]
        assert skipped and max(skipped) == 1.0, tail(log)  # one step skipped, by both ranks alike
        losses = train_losses(run)
        assert sorted(losses) == [1, 2, 3, 4, 5] and all(loss == loss for s, loss in losses.items() if s != 3)
