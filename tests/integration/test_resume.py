"""Killing `seqlab train` (SIGKILL), pre-empting it (SIGTERM) and running the same command again: the run
continues from its newest valid checkpoint and its metrics.csv holds exactly what an uninterrupted run logs.

The model is the paper's seq2seq with dropout and the objective its mixture (denoising noise, mixture choices),
so the sampler position, the noise, the model's randomness, the schedule and the optimizer all have to be
restored for the losses to match to the last digit. The interruption points are drawn from a fixed seed and
named in every failure message.
"""
import random
import re
import signal

import pytest
from launch import launch, metrics_table, resumed_from, tail, train_command, train_steps

from seqlab.config_fault import EXIT_PREEMPTED
from seqlab.experiment import compose_config, to_run_config
from seqlab.train import train

SEED = 16
OVERRIDES = ("trainer=smoke", "architecture=seq2seq_tiny", "architecture.dropout=0.1", "trainer.max_steps=12",
             "trainer.checkpoint_every_n_steps=4", "trainer.keep_last_checkpoints=2", "trainer.val_check_interval=5",
             "trainer.deterministic=true", "data.val_batches=1", "resume=auto")


@pytest.mark.slow
def test_killed_pre_empted_and_killed_mid_save_the_run_logs_exactly_the_uninterrupted_run(tmp_path, capsys):
    cache = tmp_path / "cache"
    reference = tmp_path / "reference"
    log = tmp_path / "reference.log"
    assert launch(train_command(reference, cache, *OVERRIDES), log) == 0, tail(log)
    expected = metrics_table(reference)
    assert sorted(int(r["step"]) for r in expected if r.get("train/loss")) == list(range(1, 13))

    rng = random.Random(SEED)
    kill_row, term_row = rng.choice([5, 6, 7]), rng.choice([9, 10])
    points = f"seed {SEED}: SIGKILL after row {kill_row}, SIGTERM after row {term_row}, SIGKILL mid-save of step 12"
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    command = train_command(run, cache, *OVERRIDES)

    # Between checkpoints 4 and 8: the steps after 4 are lost, and trained again.
    log = tmp_path / "killed.log"
    assert launch(command, log, lambda: kill_row in train_steps(run)) == -signal.SIGKILL, f"{points}\n{tail(log)}"

    # Pre-empted: the step in progress finishes, its checkpoint is written, the status says "retry".
    log = tmp_path / "preempted.log"
    status = launch(command, log, lambda: term_row in train_steps(run), sig=signal.SIGTERM)
    assert status == EXIT_PREEMPTED, f"{points}: exit status {status}\n{tail(log)}"
    assert resumed_from(log) == 4, f"{points}\n{tail(log)}"
    saved = re.search(r"seqlab train: stopped by SIGTERM after step (\d+), saved in (\S+)\. Run the same command "
                      r"with resume=auto to continue", log.read_text())
    assert saved, f"{points}\n{tail(log)}"
    preempted_step = int(saved.group(1))
    assert preempted_step in (term_row, term_row + 1), points  # no step lost: at most the one in progress ran
    assert saved.group(2) == str(checkpoints / f"step{preempted_step:07d}.ckpt")

    # During a save: the temporary file of checkpoint 12 exists until its rename.
    log = tmp_path / "killed_mid_save.log"
    launch(command, log, lambda: any(checkpoints.glob(".step0000012.ckpt.*.tmp")))
    assert resumed_from(log) == preempted_step, f"{points}\n{tail(log)}"

    final = tmp_path / "final.log"
    assert launch(command, final) == 0, tail(final)
    # A kill that caught checkpoint 12 mid-save leaves its temporary file, removed at the restart, and the run
    # resumes from the pre-emption's checkpoint; a kill just after its rename resumes from 12.
    cut_short = re.search(r"removing \S+/\.step0000012\.ckpt\.\d+\.tmp: a checkpoint save that was cut short",
                          final.read_text())
    assert resumed_from(final) == (preempted_step if cut_short else 12), f"{points}\n{tail(final)}"

    # Row for row, the same table: losses per objective, tokens seen, learning rates, validation.
    assert metrics_table(run) == expected, points
    assert not list(checkpoints.glob(".*.tmp")), "an unfinished save was left behind"
    # keep_last_checkpoints=2: the newest two, the pre-emption's among them.
    assert {p.name for p in checkpoints.iterdir()} == {"last.ckpt", f"step{preempted_step:07d}.ckpt",
                                                       "step0000012.ckpt"}

    # Relaunching the finished run trains nothing and says so (in this process: the same train()).
    again = to_run_config(compose_config([*OVERRIDES, f"cache_dir={cache}"]))
    assert train(again, run) is None
    assert f"run already finished: {checkpoints / 'step0000012.ckpt'} is at step 12" in capsys.readouterr().out
    assert metrics_table(run) == expected
