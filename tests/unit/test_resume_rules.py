"""Which checkpoint a run resumes from: another run's checkpoint (architecture, vocabulary, objectives or data
differ) is skipped by `resume=auto` and refused by `resume=PATH`, naming the fields; a config change is refused
unless `resume_allow` names it, and then recorded; the global batch must stay the same across world sizes."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from seqlab.errors import ConfigError, DataError
from seqlab.experiment import compose_config, to_run_config
from seqlab.fault import WORLD_SIZE_KEY, AtomicCheckpointIO, Checkpoint, inspect_checkpoint, resolve_resume
from seqlab.identity import IDENTITY_KEY, RESUMES, review_resume, run_identity

DATA = {"fingerprint": "0123456789abcdef", "shards": 12, "documents": 1200, "tokens": 98765}


def _run(*overrides: str):
    return to_run_config(compose_config(["trainer=smoke", "architecture=seq2seq_tiny", *overrides]))


def _identity(run, **changes) -> dict:
    identity = run_identity(run.architecture, 4096, "ab" * 32, ["alexatm_denoising", "clm"], DATA)
    identity.update(changes)
    return identity


def _save(path, step: int, run, identity: dict | None, world_size: int = 1):
    ckpt = {"state_dict": {"model.w": torch.ones(4)}, "optimizer_states": [{"state": {}}],
            "lr_schedulers": [{"last_epoch": step}], "loops": {}, "global_step": step, "callbacks": {},
            "hyper_parameters": {"config": dataclasses.asdict(run), "vocab_size": 4096,
                                 "objective_names": ["alexatm_denoising", "clm"]},
            WORLD_SIZE_KEY: world_size}
    if identity is not None:
        ckpt[IDENTITY_KEY] = identity
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    return path


def test_auto_skips_a_foreign_last_ckpt_naming_the_fields_and_resumes_from_the_runs_own(tmp_path):
    run, other = _run(), _run("architecture=decoder_only")
    folder = tmp_path / "checkpoints"
    own = _save(folder / "step0000030.ckpt", 30, run, _identity(run))
    foreign = _save(folder / "last.ckpt", 40, other, _identity(other))
    with pytest.warns(UserWarning) as warned:
        found = resolve_resume("auto", tmp_path, _identity(run))
    assert (found.path, found.step) == (own, 30)
    message = next(str(w.message) for w in warned if "another run" in str(w.message))
    assert message.startswith(f"skipping checkpoint {foreign} was written by another run: ")
    assert "architecture.name: 'decoder_only' in the checkpoint, 'seq2seq' in this run" in message


@pytest.mark.parametrize("field, value, shown", [
    ("tokenizer_sha256", "cd" * 32, "tokenizer_sha256: 'cdcd"),
    ("vocab_size", 8192, "vocab_size: 8192 in the checkpoint, 4096 in this run"),
    ("objectives", ["t5_span_corruption"], "objectives: ['t5_span_corruption'] in the checkpoint"),
    ("data", {**DATA, "fingerprint": "fedcba9876543210", "tokens": 5}, "data.fingerprint: 'fedcba9876543210'"),
])
def test_an_explicit_resume_from_another_runs_checkpoint_is_refused_with_the_same_message(tmp_path, field, value,
                                                                                          shown):
    run = _run()
    path = _save(tmp_path / "step0000010.ckpt", 10, run, _identity(run, **{field: value}))
    with pytest.raises(DataError) as raised:
        resolve_resume(str(path), tmp_path, _identity(run))
    message = str(raised.value)
    assert message.startswith(f"resume={path}: cannot resume from it: checkpoint {path} was written by another run: ")
    assert shown in message and "architecture.init_from.path" in message


def test_a_checkpoint_without_a_saved_identity_is_judged_by_its_hyperparameters(tmp_path):
    run, other = _run(), _run("architecture.d_model=32")
    path = _save(tmp_path / "step0000010.ckpt", 10, other, identity=None)
    assert inspect_checkpoint(path).identity["architecture"]["d_model"] == 32
    with pytest.raises(DataError, match=r"architecture.d_model: 32 in the checkpoint, 64 in this run"):
        resolve_resume(str(path), tmp_path, _identity(run))
    assert resolve_resume(str(path), tmp_path, _identity(other)).step == 10  # compatible: only what it records


def _checkpoint_of(run, world_size: int = 1) -> Checkpoint:
    return Checkpoint(path=None, step=10, config=dataclasses.asdict(run), world_size=world_size)


def test_a_new_learning_rate_is_refused_unless_resume_allow_names_it_and_is_then_recorded():
    saved = _checkpoint_of(_run())
    with pytest.raises(ConfigError) as raised:
        review_resume(saved.config, 1, _run("optim.lr=1e-3"), 1, "checkpoint C")
    assert str(raised.value) == ("checkpoint C was written with another config: optim.lr: 0.002 -> 0.001. To "
                                 "continue with these changes, add resume_allow=[optim.lr]; to start afresh, use "
                                 "another hydra.run.dir")
    record = review_resume(saved.config, 1, _run("optim.lr=1e-3", "resume_allow=[optim.lr]"), 1, "checkpoint C")
    assert record["allowed"] == {"optim.lr": [0.002, 0.001]}
    assert record["free"]["resume_allow"] == [[], ["optim.lr"]]


def test_training_longer_elsewhere_with_more_workers_is_free():
    record = review_resume(_checkpoint_of(_run()).config, 1, _run("trainer.max_steps=50", "data.num_workers=2",
                                                                  "trainer.keep_last_checkpoints=5"), 1, "C")
    assert record["allowed"] == {}
    assert set(record["free"]) == {"trainer.max_steps", "data.num_workers", "trainer.keep_last_checkpoints"}


@pytest.mark.parametrize("saved_world, batch, world, ok", [
    (2, 2, 1, False),  # half the rows per step: refused
    (2, 4, 1, True),  # 2 ranks x 2 rows -> 1 rank x 4 rows: the same global batch
    (1, 4, 2, False),
    (1, 2, 2, True),
])
def test_the_global_batch_must_stay_the_same_on_another_world_size(saved_world, batch, world, ok):
    saved = dataclasses.asdict(_run("data.batch_size=" + str(4 // saved_world)))
    run = _run(f"data.batch_size={batch}")
    if ok:
        review_resume(saved, saved_world, run, world, "C")
    else:
        with pytest.raises(ConfigError, match=r"global batch \(ranks x data.batch_size\): "):
            review_resume(saved, saved_world, run, world, "C")


def test_each_resume_is_appended_to_the_run_record(tmp_path):
    from seqlab.train import record_resume

    checkpoint = Checkpoint(tmp_path / "step0000010.ckpt", 10)
    record_resume(tmp_path, checkpoint, {"free": {"trainer.max_steps": [6, 12]}, "allowed": {}})
    with pytest.warns(UserWarning, match=r"with changes allowed by resume_allow: optim.lr: 0.002 -> 0.001"):
        record_resume(tmp_path, checkpoint, {"free": {}, "allowed": {"optim.lr": [0.002, 0.001]}})
    lines = [json.loads(line) for line in (tmp_path / RESUMES).read_text().splitlines()]
    assert [line["allowed"] for line in lines] == [{}, {"optim.lr": [0.002, 0.001]}]
    assert lines[0]["checkpoint"] == str(checkpoint.path) and lines[0]["step"] == 10


def test_auto_refuses_to_start_afresh_over_another_runs_checkpoints(tmp_path):
    run, other = _run(), _run("architecture=decoder_only")
    _save(tmp_path / "checkpoints" / "step0000010.ckpt", 10, other, _identity(other))
    with pytest.warns(UserWarning, match="was written by another run"):
        with pytest.raises(DataError, match=r"resume=auto: every checkpoint in .* that loads is another run's "
                                            r"\(step0000010.ckpt; .*Use another hydra.run.dir"):
            resolve_resume("auto", tmp_path, _identity(run))
