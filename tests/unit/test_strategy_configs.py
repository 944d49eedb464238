"""Strategy configs: values checked when the run is configured, with the field and value named."""
import pytest
import torch

from seqlab.errors import ConfigError
from seqlab.registry import STRATEGIES, load_plugins
from seqlab_plugins.strategies.fsdp import FSDPConfig
from seqlab_plugins.strategies.fsdp2 import FSDP2Config


@pytest.mark.parametrize("make, message", [
    (lambda: FSDP2Config(mixed_precision="int8"), "strategy.mixed_precision='int8': must be one of fp32, bf16, fp16"),
    (lambda: FSDP2Config(backend="mpi"), "strategy.backend='mpi': must be gloo, nccl or null"),
    (lambda: FSDPConfig(sharding_strategy="ZERO9"), "strategy.sharding_strategy='ZERO9': must be one of"),
])
def test_bad_values_name_field_and_value(make, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cpu_offload_without_a_gpu_is_refused_at_configuration():
    load_plugins()
    with pytest.raises(ConfigError, match="strategy.cpu_offload=True: offloads GPU memory to the CPU"):
        STRATEGIES.build(FSDP2Config(name="fsdp2", cpu_offload=True))


def test_fsdp2_builds_a_strategy_and_a_parallelize_function():
    load_plugins()
    setup = STRATEGIES.build(FSDP2Config(name="fsdp2"))
    assert type(setup.strategy).__name__ == "DataParallelFSDP2" and callable(setup.parallelize)
