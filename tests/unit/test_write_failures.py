"""Write failures (ENOSPC, EDQUOT, EIO, a file-size limit) at each writer: checkpoints, metrics.csv, the resolved
config and the resume record, a prepared corpus. Each stops with one message naming the file and the cause;
what was written before is intact, and no temporary file is left behind."""
from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import seqlab.fault as fault
from seqlab.errors import WriteError
from seqlab.experiment import compose_config, resource_path, to_run_config
from seqlab.fault import AtomicCheckpointIO
from seqlab.metrics_log import MetricsWriter

ERRORS = {errno.ENOSPC: "No space left on device (ENOSPC)", errno.EDQUOT: "Disk quota exceeded (EDQUOT)",
          errno.EIO: "Input/output error (EIO)"}


def _checkpoint(step: int, size: int = 4) -> dict:
    return {"state_dict": {"model.w": torch.full((size,), float(step))}, "optimizer_states": [{"state": {}}],
            "lr_schedulers": [{"last_epoch": step}], "loops": {}, "global_step": step, "callbacks": {}}


class FailingFile:
    """A binary file whose writes fail with `code` once `budget` bytes are written (the disk filled up)."""

    def __init__(self, f, code: int, budget: int):
        self.f, self.code, self.budget = f, code, budget

    def write(self, data) -> int:
        if self.budget < len(data):
            self.f.write(data[:self.budget])  # what a full disk still takes
            self.budget = 0
            raise OSError(self.code, os.strerror(self.code))
        self.budget -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("code", list(ERRORS))
def test_a_failed_checkpoint_write_names_file_and_cause_keeps_the_previous_and_leaves_no_temp(tmp_path, monkeypatch,
                                                                                               code):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(4), path)
    monkeypatch.setattr(fault, "open", lambda p, mode: FailingFile(open(p, mode), code, 600), raising=False)
    with pytest.raises(WriteError) as raised:
        AtomicCheckpointIO().save_checkpoint(_checkpoint(8, size=10_000), path)
    assert str(raised.value) == f"cannot write {path}: {ERRORS[code]}"
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temporary file
    assert torch.load(path, weights_only=True)["global_step"] == 4


FILE_SIZE_LIMIT = textwrap.dedent("""
    import resource, sys, torch
    from seqlab.errors import WriteError
    from seqlab.fault import AtomicCheckpointIO

    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # files of at most 1 MiB
    try:
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1 << 19), "global_step": 8}, sys.argv[1])
    except WriteError as err:
        print(err)
""")


def test_a_file_size_limit_stops_the_save_with_efbig(tmp_path):
    path = tmp_path / "step0000008.ckpt"
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cannot write {path}: File too large (EFBIG)"
    assert os.listdir(tmp_path) == []


def test_a_failed_metrics_append_cuts_the_file_back_to_its_last_complete_row(tmp_path, monkeypatch):
    writer = MetricsWriter(str(tmp_path), resume_step=None)
    writer.log_metrics({"train/loss": 1.5}, step=1)
    writer.save()
    before = (tmp_path / "metrics.csv").read_text()
    writer.log_metrics({"train/loss": 1.25}, step=2)
    real_open = writer._fs.open
    monkeypatch.setattr(writer._fs, "open", lambda p, mode="r", **kw: FailingFile(real_open(p, mode, **kw),
                                                                                  errno.ENOSPC, 3))
    with pytest.raises(WriteError, match=r"metrics.csv: No space left on device \(ENOSPC\)$"):
        writer.save()
    assert (tmp_path / "metrics.csv").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["metrics.csv"]


def test_a_failed_config_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    from pathlib import Path

    from seqlab.fault import write_text_atomically

    path = write_text_atomically(tmp_path / "resumes.jsonl", "{}\n")

    def full(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(WriteError, match=r"resumes.jsonl: No space left on device \(ENOSPC\)$"):
        write_text_atomically(path, "{}\n", append=True)
    assert path.read_text() == "{}\n" and os.listdir(tmp_path) == ["resumes.jsonl"]


def test_a_failed_corpus_write_leaves_no_output_and_no_temporary_folder(tmp_path, monkeypatch):
    from seqlab.data import store
    from seqlab.data.prepare import prepare_corpus

    (tmp_path / "in.txt").write_text("one document\nanother document\n", encoding="utf-8")

    def full(src, dst, length=0):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.shutil, "copyfileobj", full)  # the copy of encoded parts into a shard
    out = tmp_path / "prepared"
    with pytest.raises(WriteError) as raised:
        prepare_corpus([tmp_path / "in.txt"], resource_path("tokenizer/embedded.model"), out, progress=False)
    assert "No space left on device (ENOSPC). Nothing was written to " + str(out) in str(raised.value)
    assert sorted(os.listdir(tmp_path)) == ["in.txt"]


@pytest.mark.slow
def test_a_full_disk_during_training_names_the_last_intact_checkpoint(tmp_path, monkeypatch):
    from seqlab.train import train

    run = to_run_config(compose_config(["trainer=smoke", f"cache_dir={tmp_path / 'cache'}", "trainer.max_steps=6",
                                        "trainer.checkpoint_every_n_steps=2", "trainer.val_check_interval=100"]))
    saves = []
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        saves.append(obj.get("global_step") if isinstance(obj, dict) else None)
        if len(saves) == 3:  # step 2's file and last.ckpt, then step 4's file fills the disk
            f.write(b"PK\x03\x04 part of a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(fault.torch, "save", save)
    run_dir = tmp_path / "run"
    with pytest.raises(WriteError) as raised:
        train(run, run_dir)
    checkpoints = run_dir / "checkpoints"
    assert str(raised.value) == (
        f"cannot write {checkpoints / 'step0000004.ckpt'}: No space left on device (ENOSPC). Every file written "
        f"before is intact; the last intact checkpoint is {checkpoints / 'step0000002.ckpt'} (step 2)")
    assert sorted(os.listdir(checkpoints)) == ["last.ckpt", "step0000002.ckpt"]
    assert fault.inspect_checkpoint(checkpoints / "step0000002.ckpt").step == 2


def test_the_cause_of_a_failed_sharded_save_is_found_in_torchs_checkpoint_exception(tmp_path):
    import traceback

    from torch.distributed.checkpoint.api import CheckpointException

    from seqlab.sharded import storage_error

    def failed(*causes):
        return CheckpointException("save failed", {rank: (cause, traceback.StackSummary())
                                                   for rank, cause in enumerate(causes)})

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert storage_error(failed(ValueError("planner"), full), tmp_path) == "No space left on device (ENOSPC)"
    assert storage_error(full, tmp_path) == "No space left on device (ENOSPC)"
    assert storage_error(failed(ValueError("a bug")), tmp_path) is None
    assert storage_error(RuntimeError("a bug"), tmp_path) is None
    # torch.save into a file object says only "unexpected pos": the cause is read from the limits.
    cut = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert storage_error(failed(cut, cut), tmp_path).startswith("a write was cut short: ")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_a_file_size_limit_on_two_ranks_stops_with_one_message_and_no_traceback(tmp_path, strategy):
    """DDP: rank 0 writes the file and says why; rank 1 finds its peer gone. FSDP2 (sharded): every rank writes
    its shard and torch raises on all of them, so rank 0 alone says it, and the unsealed folder is removed."""
    import resource

    def limit() -> None:  # 4 MiB per file: the first checkpoint (12 MB, or 7.5 MB per shard) cannot be written
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

    run_dir = tmp_path / "run"
    where = ["experiment=ddp_cpu"] if strategy == "ddp" else ["strategy=fsdp2", "trainer.accelerator=cpu",
                                                              "trainer.devices=2"]
    result = subprocess.run([sys.executable, "-m", "seqlab", "train", *where, "trainer=smoke", "data.batch_size=2",
                             f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=limit,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("seqlab train: error: ")]
    checkpoint = run_dir / "checkpoints" / "step0000003.ckpt"
    cause = "File too large (EFBIG)" if strategy == "ddp" else \
        "a write was cut short: File too large (EFBIG), the file-size limit (ulimit -f) is 4194304 bytes"
    assert errors[0] == f"seqlab train: error: cannot write {checkpoint}: {cause}. No checkpoint of this run was " \
                        "written yet", result.stderr[-3000:]
    if strategy == "ddp":
        assert len(errors) == 2 and re.fullmatch(
            r"seqlab train: error: \[rank 1\] stopped: another rank ended \(Connection (closed|reset) by peer in a "
            r"collective\); its message says why", errors[1]), errors
    else:
        assert len(errors) == 1, errors
    assert os.listdir(run_dir / "checkpoints") == []  # no temporary file or folder
