"""trainer.compile: blocks compiled in place (same modules, same state-dict names), training that matches eager
training, checkpoints with the same keys, and a compiled resume that continues the run."""
import csv
import shutil
from pathlib import Path

import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.experiment import compose_config, to_run_config
from seqlab.module import compile_blocks
from seqlab.registry import ARCHITECTURES
from seqlab.train import build_components, build_trainer
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig

# Few steps, validation off (it would only add no-grad graphs to compile), a checkpoint after step 2 to resume
# from. The default objective mixes denoising rows and CLM documents, so batch widths change from step to step:
# the dynamic-shape recompilation runs too.
STEPS = ("trainer=smoke", "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2", "data.val_batches=0",
         "data.batch_size=4")
needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="inductor on CPU needs a C++ compiler")


def _run_config(tmp_path: Path, *overrides: str):
    return to_run_config(compose_config([*STEPS, f"cache_dir={tmp_path / 'cache'}", *overrides]))


def _fit(tmp_path: Path, name: str, *overrides: str, resume: Path | None = None):
    run = _run_config(tmp_path, *overrides, *([f"resume={resume}"] if resume else []))
    parts = build_components(run)
    build_trainer(run, tmp_path / name, parts.strategy).fit(parts.module, datamodule=parts.datamodule,
                                                            ckpt_path=str(resume) if resume else None,
                                                            weights_only=True)
    with open(tmp_path / name / "csv" / "metrics.csv") as f:
        losses = {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")}
    return parts.module, losses


def _keys(checkpoint: Path) -> list[str]:
    return list(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])


def test_compile_blocks_on_meta_keeps_modules_and_names():
    """Compiling only marks the blocks: it works on the meta device, before materialisation, and changes no name."""
    cfg = Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=2, decoder_layers=1, d_ff=64)
    with torch.device("meta"):
        model = ARCHITECTURES.build(cfg, vocab_size=64)
    names, blocks = list(model.state_dict()), list(model.blocks)
    compile_blocks(model, mode=None)
    assert [id(b) for b in model.blocks] == [id(b) for b in blocks]
    assert all(b._compiled_call_impl is not None for b in model.blocks)
    model.to_empty(device="cpu")
    model.init_weights(0)
    assert list(model.state_dict()) == names and not any("_orig_mod" in n for n in names)


@pytest.mark.parametrize("overrides, message", [
    (("trainer.compile_mode=max-autotune",), "trainer.compile_mode='max-autotune': needs trainer.compile=true"),
    (("trainer.compile=true", "trainer.compile_mode=fast"), "trainer.compile_mode='fast': must be one of default"),
])
def test_bad_compile_settings_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _run_config(tmp_path, *overrides)


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("architecture", ["seq2seq_tiny", "decoder_only"])
def test_compiled_training_matches_eager_and_resumes(tmp_path, architecture):
    _, eager = _fit(tmp_path, "eager", f"architecture={architecture}")
    module, compiled = _fit(tmp_path, "compiled", f"architecture={architecture}", "trainer.compile=true")
    assert all(block._compiled_call_impl is not None for block in module.model.blocks)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the compiled path ran
    assert sorted(compiled) == sorted(eager) == [1, 2, 3, 4]
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4), step

    eager_keys = _keys(tmp_path / "eager" / "checkpoints" / "last.ckpt")
    assert _keys(tmp_path / "compiled" / "checkpoints" / "last.ckpt") == eager_keys
    assert not any("_orig_mod" in key for key in eager_keys)

    _, resumed = _fit(tmp_path, "resumed", f"architecture={architecture}", "trainer.compile=true",
                      resume=tmp_path / "compiled" / "checkpoints" / "step0000002.ckpt")
    assert sorted(resumed) == [3, 4]
    for step in resumed:
        assert resumed[step] == pytest.approx(compiled[step], rel=1e-4), step
