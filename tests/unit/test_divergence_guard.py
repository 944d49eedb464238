"""The divergence guard on its own: config checks, NaN/inf/spike verdicts per objective, saved state."""
import io

import pytest
import torch

from seqlab.config import TrainerConfig
from seqlab.config_fault import DivergenceConfig
from seqlab.errors import ConfigError
from seqlab.guard import DivergenceGuard

NAMES = ("denoising", "clm")


def _sums(*losses: float, tokens: float = 10.0) -> torch.Tensor:
    """(2, K) per-objective loss sums and token counts for the given per-token mean losses."""
    return torch.tensor([[loss * tokens for loss in losses], [tokens] * len(losses)], dtype=torch.float64)


@pytest.mark.parametrize("kwargs, message", [
    ({"action": "ignore"}, "trainer.divergence.action='ignore': must be stop or skip"),
    ({"spike_factor": 1.0}, "trainer.divergence.spike_factor=1.0: must be > 1 or null"),
    ({"window": 0}, "trainer.divergence.window=0: must be >= 1"),
    ({"warmup_steps": -1}, "trainer.divergence.warmup_steps=-1: must be >= 0"),
])
def test_config_is_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DivergenceConfig(**kwargs)


def test_skip_is_refused_with_the_fp16_gradient_scaler():
    with pytest.raises(ConfigError, match="skip does not work with trainer.precision=16-mixed"):
        TrainerConfig(precision="16-mixed", divergence=DivergenceConfig(action="skip"))
    TrainerConfig(precision="bf16-mixed", divergence=DivergenceConfig(action="skip"))


def test_nan_and_inf_are_found_per_objective_and_absent_objectives_are_ignored():
    guard = DivergenceGuard(DivergenceConfig(), NAMES)
    assert guard.check(1, _sums(8.0, 8.1)) == []
    problems = guard.check(2, _sums(float("nan"), float("inf")))
    assert [(p.objective, p.why) for p in problems] == [("denoising", "nan"), ("clm", "inf")]
    no_clm_rows = torch.tensor([[80.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    assert guard.check(3, no_clm_rows) == []


def test_a_spike_counts_after_warmup_only_and_does_not_join_the_running_mean():
    guard = DivergenceGuard(DivergenceConfig(spike_factor=2.0, window=3, warmup_steps=3), NAMES)
    assert guard.check(1, _sums(2.0, 2.0)) == []
    assert guard.check(2, _sums(9.0, 2.0)) == []  # still in warmup: joins the mean
    assert list(guard.history["denoising"]) == [2.0, 9.0]
    assert guard.check(3, _sums(4.0, 2.0)) == []  # mean 5.5: not a spike
    problems = guard.check(4, _sums(2.0, 4.5))  # clm's mean is 2.0
    assert [p.objective for p in problems] == ["clm"]
    assert problems[0].why == ("above trainer.divergence.spike_factor=2.0 x its running mean 2.0000 "
                               "over the last 3 steps")
    assert list(guard.history["clm"]) == [2.0, 2.0, 2.0]
    assert list(guard.history["denoising"]) == [9.0, 4.0, 2.0]  # the window keeps the last 3


def test_the_message_names_step_objective_and_batch():
    guard = DivergenceGuard(DivergenceConfig(), NAMES)
    problems = guard.check(7, _sums(8.0, float("nan")))
    assert guard.describe(7, problems, "data stream step 6 of seed 0, batch_idx 6") == (
        "divergence at step 7: objective clm: loss nan; batch: data stream step 6 of seed 0, batch_idx 6")


def test_state_survives_a_weights_only_checkpoint_round_trip():
    cfg = DivergenceConfig(spike_factor=3.0, window=4)
    guard = DivergenceGuard(cfg, NAMES)
    for step, loss in enumerate((8.0, 7.5, 7.0), start=1):
        guard.check(step, _sums(loss, loss + 0.5))
    guard.skipped = 2
    buffer = io.BytesIO()
    torch.save({"divergence_guard": guard.state_dict()}, buffer)
    buffer.seek(0)
    restored = DivergenceGuard(cfg, NAMES)
    restored.load_state_dict(torch.load(buffer, weights_only=True)["divergence_guard"])
    assert restored.state_dict() == guard.state_dict()
