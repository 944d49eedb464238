"""End-to-end training on CPU: loss goes down, outputs land where the summary says, resume continues."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlab.experiment import compose_config, to_run_config
from seqlab.train import build_components, build_trainer, save_resolved_config


def _run_config(tmp_path: Path, *overrides: str):
    return to_run_config(compose_config(["trainer=smoke", f"cache_dir={tmp_path / 'cache'}", *overrides]))


def _losses(metrics_csv: Path, key: str = "train/loss") -> dict[int, float]:
    with open(metrics_csv) as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


@pytest.mark.slow
def test_fit_lowers_loss_on_a_fixed_batch(tmp_path):
    run = _run_config(tmp_path, "trainer.max_steps=40", "trainer.val_check_interval=40", "optim.lr=3e-3",
                      "optim.warmup_steps=5", "trainer.checkpoint_every_n_steps=40")
    parts = build_components(run)
    parts.datamodule.setup("fit")
    batch = next(iter(parts.datamodule.val_dataloader()))
    batch.pop("sampler_state")
    parts.module.configure_model()

    def loss() -> float:
        with torch.no_grad():
            out = parts.module.model.loss(batch)
        return float(out.loss_sum.sum() / out.tokens.sum())

    before = loss()
    trainer = build_trainer(run, tmp_path / "run", parts.strategy)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    after = loss()
    assert trainer.global_step == 40
    assert after < before - 1.0, (before, after)  # from ~ln(4096)=8.3 to well below


@pytest.mark.slow
def test_seqlab_train_command_writes_config_checkpoints_and_metrics(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "seqlab", "train", "trainer=smoke", f"hydra.run.dir={run_dir}",
         f"cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run finished after 6 steps: {run_dir}" in result.stdout
    resolved = (run_dir / "config.resolved.yaml").read_text()
    assert "name: decoder_only" in resolved and "${" not in resolved  # interpolations resolved
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.ckpt", "step0000003.ckpt",
                                                                      "step0000006.ckpt"}
    losses = _losses(run_dir / "csv" / "metrics.csv")
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]  # logged after each optimizer step
    assert _losses(run_dir / "csv" / "metrics.csv", "val/loss_clm")


@pytest.mark.slow
def test_tensorboard_logger_when_selected(tmp_path):
    run = _run_config(tmp_path, "trainer.logger=tensorboard", "trainer.max_steps=2")
    parts = build_components(run)
    build_trainer(run, tmp_path / "run", parts.strategy).fit(parts.module, datamodule=parts.datamodule)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_same_stream(tmp_path):
    """Stopping after step 3 and resuming gives the losses of the uninterrupted run (sampler state restored)."""
    full = _run_config(tmp_path)
    parts = build_components(full)
    build_trainer(full, tmp_path / "full", parts.strategy).fit(parts.module, datamodule=parts.datamodule)
    reference = _losses(tmp_path / "full" / "csv" / "metrics.csv")

    checkpoint = tmp_path / "full" / "checkpoints" / "step0000003.ckpt"
    resumed = _run_config(tmp_path, f"resume={checkpoint}")
    parts = build_components(resumed)
    build_trainer(resumed, tmp_path / "resumed", parts.strategy).fit(parts.module, datamodule=parts.datamodule,
                                                                    ckpt_path=resumed.resume)
    continued = _losses(tmp_path / "resumed" / "csv" / "metrics.csv")
    assert sorted(continued) == [4, 5, 6]
    for step in (4, 5, 6):
        assert continued[step] == pytest.approx(reference[step], abs=1e-6), step


@pytest.mark.slow
def test_multirun_sweeps_architectures(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "seqlab", "train", "-m", "architecture=decoder_only,gpt_small", "trainer=smoke",
         "trainer.max_steps=2", "data.batch_size=2", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    configs = {job.name: (job / "config.resolved.yaml").read_text() for job in sweep.iterdir() if job.is_dir()}
    assert set(configs) == {"0", "1"}
    assert "d_model: 128" in configs["0"] and "d_model: 512" in configs["1"]
    assert all((sweep / job / "checkpoints" / "last.ckpt").is_file() for job in configs)


def test_missing_tokenizer_says_how_to_make_one(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "seqlab", "train", "tokenizer.path=/nonexistent/tok.model",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "tokenizer.path=/nonexistent/tok.model: file not found" in result.stderr
    assert "seqlab tokenizer train CORPUS_PATH --output /nonexistent/tok.model" in result.stderr
    assert "Traceback" not in result.stderr


def test_save_resolved_config_roundtrips(tmp_path):
    import yaml

    run = _run_config(tmp_path, "optim.lr=0.01")
    path = save_resolved_config(run, tmp_path)
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 0.01


def _architectures() -> list[str]:
    from seqlab.registry import ARCHITECTURES, load_plugins

    load_plugins()
    return ARCHITECTURES.names()


@pytest.mark.slow
@pytest.mark.parametrize("architecture", _architectures())
def test_alexatm_mixture_training_lowers_the_loss_of_both_children(tmp_path, architecture):
    run = _run_config(tmp_path, "objective=alexatm", f"architecture={architecture}", "trainer.max_steps=60",
                      "trainer.val_check_interval=60", "trainer.checkpoint_every_n_steps=60", "optim.lr=3e-3",
                      "optim.warmup_steps=5")
    parts = build_components(run)
    parts.datamodule.setup("fit")
    batches = [{k: v for k, v in b.items() if k != "sampler_state"} for b in parts.datamodule.val_dataloader()]
    parts.module.configure_model()
    names = parts.module.objective_names
    assert names == ("alexatm_denoising", "clm")

    def child_losses() -> list[float]:
        sums = torch.zeros(2, len(names), dtype=torch.float64)
        with torch.no_grad():
            for batch in batches:
                out = parts.module.model.loss(batch)
                sums[0].index_add_(0, batch["objective"], out.loss_sum.double())
                sums[1].index_add_(0, batch["objective"], out.tokens.double())
        assert (sums[1] > 0).all(), "the validation batches hold rows of both children"
        return (sums[0] / sums[1]).tolist()

    before = child_losses()
    build_trainer(run, tmp_path / "run", parts.strategy).fit(parts.module, datamodule=parts.datamodule)
    after = child_losses()
    for name, b, a in zip(names, before, after):
        assert a < b - 0.5, f"{name}: {b:.3f} -> {a:.3f}"
    logged = _losses(tmp_path / "run" / "csv" / "metrics.csv", "train/loss_clm")
    assert logged, "the per-child loss is logged"
