"""Checkpoint files: atomic saves (a kill mid-save leaves the previous file), choosing the checkpoint to resume
from (corrupt, truncated, unsafe or NaN files are skipped, with a warning naming them), and metrics rows kept
across a resume."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from seqlab.errors import DataError
from seqlab.fault import AtomicCheckpointIO, inspect_checkpoint, latest_checkpoint, resolve_resume
from seqlab.metrics_log import kept_rows


def _checkpoint(step: int, weight: float = 1.0) -> dict:
    """The keys Lightning needs to resume, around a tiny state dict."""
    return {"state_dict": {"model.w": torch.full((4,), weight)}, "optimizer_states": [{"state": {}}],
            "lr_schedulers": [{"last_epoch": step}], "loops": {}, "global_step": step, "callbacks": {}}


def _save(path, step: int, weight: float = 1.0):
    AtomicCheckpointIO().save_checkpoint(_checkpoint(step, weight), path)
    return path


def test_atomic_save_writes_a_weights_only_loadable_file_and_no_temporary(tmp_path):
    path = _save(tmp_path / "checkpoints" / "step0000003.ckpt", 3)
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert os.listdir(path.parent) == ["step0000003.ckpt"]


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    from seqlab.fault import AtomicCheckpointIO

    def dies_half_way(obj, f):
        f.write(b"PK\\x03\\x04 half of a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dies_half_way
    AtomicCheckpointIO().save_checkpoint({"global_step": 8}, sys.argv[1])
""")


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    run_dir = tmp_path / "run"
    path = _save(run_dir / "checkpoints" / "last.ckpt", 4)
    process = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], capture_output=True, text=True,
                             timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr
    leftovers = list(path.parent.glob(".last.ckpt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the kill landed mid-save
    assert torch.load(path, weights_only=True)["global_step"] == 4  # the previous file, intact

    with pytest.warns(UserWarning, match=r"removing .*\.last\.ckpt\.\d+\.tmp: a checkpoint save that was cut short"):
        found = resolve_resume("auto", run_dir)
    assert (found.path, found.step) == (path, 4)
    assert not list(path.parent.glob(".*.tmp"))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class NotData:
    """Anything that is not plain data needs pickle's code paths to load."""


@pytest.mark.parametrize("damage, why", [
    (_truncate, "not loadable"),
    (lambda p: p.write_bytes(b""), "not loadable"),
    (lambda p: torch.save({**_checkpoint(12), "extra": NotData()}, p), "not loadable .*Weights only load failed"),
    (lambda p: torch.save({"state_dict": {}, "global_step": 12}, p), "lacks optimizer_states"),
    (lambda p: _save(p, 12, weight=float("nan")), "non-finite weights in model.w"),
], ids=["truncated", "empty", "pickled_object", "weights_only_file", "nan_weights"])
def test_a_bad_newest_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, damage, why):
    folder = tmp_path / "checkpoints"
    _save(folder / "step0000008.ckpt", 8)
    newest = _save(folder / "step0000012.ckpt", 12)
    damage(newest)
    with pytest.warns(UserWarning, match=rf"skipping checkpoint {newest}: {why}"):
        found = latest_checkpoint(folder)
    assert found.path.name == "step0000008.ckpt" and found.step == 8


def test_a_corrupt_byte_is_caught_by_the_checksum(tmp_path):
    path = _save(tmp_path / "step0000012.ckpt", 12)
    data = bytearray(path.read_bytes())  # zip records are stored uncompressed: the weights' bytes are there
    at = data.index(torch.full((4,), 1.0).numpy().tobytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"record .*data/0 fails its checksum"):
        inspect_checkpoint(path)


def test_the_newest_valid_step_wins_and_a_step_file_over_last_ckpt(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (4, 8):
        _save(folder / f"step{step:07d}.ckpt", step)
    _save(folder / "last.ckpt", 8)
    assert latest_checkpoint(folder).path.name == "step0000008.ckpt"


def test_resume_auto_without_checkpoints_starts_fresh_and_a_bad_explicit_path_is_an_error(tmp_path):
    assert resolve_resume("auto", tmp_path / "run") is None
    assert resolve_resume(None, tmp_path / "run") is None
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=rf"resume={bad}: cannot resume from it: checkpoint {bad}: not loadable"):
        resolve_resume(str(bad), tmp_path / "run")


def test_kept_rows_are_those_the_resumed_run_does_not_log_again(tmp_path):
    metrics = tmp_path / "metrics.csv"
    # Lightning's labels: lr rows and validation rows carry the steps completed before them.
    metrics.write_text("epoch,lr,step,train/loss,val/loss\n"
                       ",0.1,3,,\n"  # lr of step 4
                       ",,4,8.25,\n"  # training row of step 4
                       "0,,3,,7.5\n"  # validation after step 4
                       ",0.2,4,,\n"  # lr of step 5: logged again after resuming at 4
                       ",,5,8.125,\n"  # step 5: trained again
                       ",,6,8.0")  # cut short by the kill
    assert kept_rows(metrics, 4) == [(3, {"lr": "0.1"}), (4, {"train/loss": "8.25"}),
                                     (3, {"epoch": "0", "val/loss": "7.5"})]


def _sharded(folder, step: int, world_size: int = 2):
    """A sharded checkpoint folder as FSDP2 writes it (Lightning's meta.pt, torch's .metadata, one file per
    rank), sealed the way DataParallelFSDP2 seals it."""
    from seqlab.sharded import partial_folder, seal_sharded

    final = folder / f"step{step:07d}.ckpt"
    temp = partial_folder(final)
    temp.mkdir(parents=True)
    torch.save({k: v for k, v in _checkpoint(step).items() if k not in ("state_dict", "optimizer_states")},
               temp / "meta.pt")
    (temp / ".metadata").write_bytes(b"torch distributed checkpoint metadata")
    for rank in range(world_size):
        (temp / f"__{rank}_0.distcp").write_bytes(bytes(100))
    seal_sharded(temp, final, world_size)
    return final


def test_a_sharded_folder_is_sealed_with_every_file_and_checked_file_by_file(tmp_path):
    from seqlab.sharded import COMPLETE

    path = _sharded(tmp_path / "checkpoints", 4)
    assert inspect_checkpoint(path).step == 4
    assert os.listdir(tmp_path / "checkpoints") == ["step0000004.ckpt"]  # the hidden folder became it
    (path / "__1_0.distcp").write_bytes(bytes(10))  # rank 1's shard cut short
    with pytest.raises(DataError, match=f"shard file __1_0.distcp is 10 bytes, {COMPLETE} lists 100 bytes"):
        inspect_checkpoint(path)
    (path / "__1_0.distcp").unlink()
    with pytest.raises(DataError, match="shard file __1_0.distcp is missing"):
        inspect_checkpoint(path)


def test_a_sharded_save_cut_short_is_removed_and_one_caught_mid_swap_put_back(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    older, newer = _sharded(folder, 4), _sharded(folder, 8)
    # Killed between the two renames of replacing step 8: the complete old folder is aside, none in place.
    os.replace(newer, folder / ".step0000008.ckpt.old")
    (folder / ".step0000012.ckpt.partial").mkdir()  # and a later save that never finished
    with pytest.warns(UserWarning) as warned:
        found = resolve_resume("auto", tmp_path / "run")
    messages = [str(w.message) for w in warned]
    assert any(m.startswith(f"restoring {newer} from ") for m in messages), messages
    assert any("removing" in m and ".step0000012.ckpt.partial" in m for m in messages), messages
    assert (found.path, found.step) == (newer, 8)
    assert sorted(os.listdir(folder)) == [older.name, newer.name]
