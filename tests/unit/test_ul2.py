"""UL2: the paper's seven denoisers, mode tokens matching the chosen denoiser, rates, exact reconstruction."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import planned_rows
from hypothesis import given, settings, strategies as st
from omegaconf import OmegaConf

from seqlab.errors import ConfigError
from seqlab.experiment import compose_config, resource_path
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConverter
from seqlab_plugins.objectives.mixture import Mixture
from seqlab_plugins.objectives.t5_span_corruption import T5SpanCorruption
from seqlab_plugins.objectives.ul2 import MODE_TOKENS, UL2Config, UL2Denoiser, build_ul2

PROPERTY = settings(max_examples=100, deadline=None)
SEQ_LEN = 64  # the widest denoiser, x_3_0.5, then needs 15 sentinels: the small tokenizer has 16


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer) -> Tokenizer:
    return Tokenizer(small_tokenizer)


@pytest.fixture(scope="module")
def ul2(tokenizer) -> Mixture:
    return build_ul2(UL2Config(name="ul2"), tokenizer=tokenizer, seq_len=SEQ_LEN)


def reconstruct(inputs: np.ndarray, targets: np.ndarray, sentinels: set[int]) -> list[int]:
    """Put each target span back in place of its sentinel in the inputs (both without EOS or mode token)."""
    spans: dict[int, list[int]] = {}
    for token in targets.tolist():
        if token in sentinels:
            current = spans.setdefault(token, [])
        else:
            current.append(token)
    return [t for token in inputs.tolist() for t in (spans[token] if token in sentinels else [token])]


def test_default_is_the_papers_seven_denoisers_at_uniform_rates(ul2):
    assert ul2.names == ("r_3_0.15", "r_8_0.15", "x_3_0.5", "x_8_0.5", "x_64_0.15", "x_64_0.5", "s")
    np.testing.assert_allclose(ul2.rates, np.full(7, 1 / 7))
    span = [child for child in ul2.children if isinstance(child, T5SpanCorruption)]
    assert [c.cfg.mode_token for c in span] == ["[NLU]"] * 2 + ["[NLG]"] * 4
    assert ul2.children[-1].cfg.mode_token == "[S2S]"


def test_paper_preset_spells_out_the_default():
    # The preset lists the same denoisers as UL2Config's default, so either way gives the paper's mix.
    assert OmegaConf.to_object(compose_config(["objective=ul2_paper"]).objective) == UL2Config(name="ul2")


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1))
def test_every_row_gets_its_denoisers_mode_token_and_reconstructs(tokenizer, ul2, seed):
    rng = np.random.default_rng(seed)
    plan = ul2.plan(16, rng)
    rows = planned_rows(tokenizer, rng, plan)
    f = ul2(rows, rng)
    np.testing.assert_array_equal(f.objective, plan.task)
    assert (f.input_lengths <= SEQ_LEN).all() and (f.target_lengths <= SEQ_LEN).all()
    sentinels = set(tokenizer.sentinel_ids.tolist())
    for b in range(16):
        label = ul2.names[f.objective[b]]
        child = ul2.children[f.objective[b]]
        assert f.inputs[b, 0] == tokenizer.token_id(MODE_TOKENS[label[0]])
        inputs, targets = f.inputs[b, 1:f.input_lengths[b]], f.targets[b, :f.target_lengths[b]]
        row = rows.tokens[b, :rows.lengths[b]].tolist()
        if label == "s":
            assert inputs.tolist() + targets.tolist() == row
            continue
        assert f.input_lengths[b] == SEQ_LEN and f.target_lengths[b] == child.target_length  # density < 0.5
        assert inputs[-1] == targets[-1] == tokenizer.eos_id
        assert reconstruct(inputs[:-1], targets[:-1], sentinels) == row


def test_child_frequencies_match_rates(tokenizer):
    cfg = UL2Config(name="ul2", denoisers=[UL2Denoiser("r", 3.0, 0.15, 4.0), UL2Denoiser("x", 8.0, 0.5, 2.0),
                                           UL2Denoiser("x", 64.0, 0.15, 1.0), UL2Denoiser("s", rate=1.0)])
    obj = build_ul2(cfg, tokenizer=tokenizer, seq_len=SEQ_LEN)
    plan = obj.plan(40000, np.random.default_rng(0))
    counts = np.bincount(plan.task, minlength=4)
    expected = 40000 * np.array([4, 2, 1, 1]) / 8
    assert ((counts - expected) ** 2 / expected).sum() < 16.27  # chi-square, 3 dof: p = 0.001 for the right rates
    # Each row asks for its own denoiser's raw length: span corruption takes more than seq_len, prefix LM seq_len.
    lengths = [c.raw_length for c in obj.children[:3]] + [SEQ_LEN]
    np.testing.assert_array_equal(plan.length, np.asarray(lengths)[plan.task])


def test_same_seed_same_plan_and_features(tokenizer, ul2):
    def run(seed: int):
        rng = np.random.default_rng(seed)
        plan = ul2.plan(32, rng)
        return ul2(planned_rows(tokenizer, rng, plan), rng)

    a, b = run(3), run(3)
    for field in ("inputs", "input_lengths", "targets", "target_lengths", "objective"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.objective, run(4).objective)


def test_decoder_only_loss_is_on_the_targets_only(tokenizer, ul2):
    rng = np.random.default_rng(2)
    f = ul2(planned_rows(tokenizer, rng, ul2.plan(64, rng)), rng)
    labels = DecoderOnlyConverter(pad_id=0, max_positions=4096, prefix_lm=True)(f)["labels"].numpy()
    assert ((labels != IGNORE_INDEX).sum(axis=1) == f.target_lengths).all()
    np.testing.assert_array_equal(labels[labels != IGNORE_INDEX], f.targets[f.targets != tokenizer.pad_id])


def test_default_mix_needs_more_sentinels_at_512():
    # x_3_0.5 corrupts 382 of 765 raw tokens in 127 spans: T5's 100 sentinels (as in the packaged tokenizer)
    # are not enough; the error names the denoiser.
    tokenizer = Tokenizer(resource_path("tokenizer/embedded.model"))
    with pytest.raises(ConfigError, match=r"objective.denoisers\[2\] \(x_3_0.5\): .*127 sentinels, .* has 100"):
        build_ul2(UL2Config(name="ul2"), tokenizer=tokenizer, seq_len=512)


@pytest.mark.parametrize("denoisers, match", [
    ([], r"objective.denoisers=\[\]"),
    ([UL2Denoiser("y")], r"objective.denoisers\[0\].kind='y'"),
    ([UL2Denoiser("s"), UL2Denoiser("r", rate=-1.0)], r"objective.denoisers\[1\].rate=-1.0"),
    ([UL2Denoiser("r", rate=0.0), UL2Denoiser("s", rate=0.0)], r"objective.denoisers\[\*\].rate"),
    ([UL2Denoiser("x", 3.0, 1.0)], r"objective.denoisers\[0\].noise_density=1.0"),
    ([UL2Denoiser("r", 3.0, 0.15), UL2Denoiser("x", 0.5, 0.15)], r"objective.denoisers\[1\].mean_noise_span_length"),
    ([UL2Denoiser("s"), UL2Denoiser("s")], r"objective.denoisers\[\*\]=\['s', 's'\]: must be distinct"),
])
def test_config_errors_name_the_denoiser_field(denoisers, match):
    with pytest.raises(ConfigError, match=match):
        UL2Config(name="ul2", denoisers=denoisers)


def test_s_denoiser_ignores_noise_fields():
    UL2Config(name="ul2", denoisers=[UL2Denoiser("s", mean_noise_span_length=0.0, noise_density=2.0)])
