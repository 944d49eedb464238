"""strategy=fairscale_fsdp: refused while configuring on a machine without CUDA; on one GPU it trains, saves the
full state dict under the unwrapped model's keys, and resumes."""
import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.experiment import compose_config, to_run_config
from seqlab.registry import ARCHITECTURES, STRATEGIES
from seqlab.train import build_components, build_trainer


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of machines without CUDA")
def test_refused_without_cuda_naming_the_strategy_and_the_alternative():
    run = to_run_config(compose_config(["strategy=fairscale_fsdp"]))
    with pytest.raises(ConfigError) as err:
        STRATEGIES.build(run.strategy)
    message = str(err.value)
    assert "strategy=fairscale_fsdp" in message and "needs CUDA GPUs" in message and "strategy=fsdp2" in message


def test_config_fields_are_validated():
    run = to_run_config(compose_config(["strategy=fairscale_fsdp", "strategy.flatten_parameters=false",
                                        "strategy.cpu_offload=true", "strategy.reshard_after_forward=false"]))
    assert (run.strategy.flatten_parameters, run.strategy.cpu_offload, run.strategy.reshard_after_forward) == (
        False, True, False)
    with pytest.raises(ConfigError, match=r"strategy.mixed_precision='fp8': must be one of fp32, bf16, fp16"):
        to_run_config(compose_config(["strategy=fairscale_fsdp", "strategy.mixed_precision=fp8"]))


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fairscale's FSDP needs CUDA")
def test_three_steps_on_one_gpu_save_the_full_state_dict_and_resume(tmp_path):
    pytest.importorskip("fairscale")
    overrides = ["trainer=smoke", "trainer.accelerator=gpu", "trainer.devices=1", "strategy=fairscale_fsdp",
                 "objective=clm", "objective.packed=true", "architecture=seq2seq", f"cache_dir={tmp_path / 'cache'}"]
    run = to_run_config(compose_config([*overrides, "trainer.max_steps=3"]))
    parts = build_components(run)
    trainer = build_trainer(run, tmp_path / "run", parts.strategy)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    assert trainer.global_step == 3

    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    model = ARCHITECTURES.build(run.architecture, vocab_size=parts.tokenizer.vocab_size)
    assert {k: v.shape for k, v in saved.items()} == {f"model.{k}": v.shape for k, v in model.state_dict().items()}
    assert all(v.device.type == "cpu" and v.isfinite().all() for v in saved.values())

    resumed = to_run_config(compose_config([*overrides, "trainer.max_steps=4"]))
    parts = build_components(resumed)
    trainer = build_trainer(resumed, tmp_path / "resumed", parts.strategy)
    trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=str(checkpoint))
    assert trainer.global_step == 4
