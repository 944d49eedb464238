"""Mixtures: validated and normalised rates, seeded per-row choice, per-child routing, nesting."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seqlab.errors import ConfigError
from seqlab.interfaces import Rows
from seqlab.registry import OBJECTIVES, load_plugins
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.objectives.mixture import MixtureChild, MixtureConfig

DENOISE = {"name": "alexatm_denoising"}
CLM = {"name": "clm"}


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer) -> Tokenizer:
    load_plugins()
    return Tokenizer(small_tokenizer)


def build(tokenizer, children, seq_len=64):
    cfg = MixtureConfig(name="mixture", children=[MixtureChild(**c) for c in children])
    return OBJECTIVES.build(cfg, tokenizer=tokenizer, seq_len=seq_len)


def alexatm(tokenizer, seq_len=64):
    return build(tokenizer, [{"objective": DENOISE, "rate": 0.8}, {"objective": CLM, "rate": 0.2}], seq_len)


def test_children_configs_are_validated_dataclasses(tokenizer):
    cfg = MixtureConfig(name="mixture", children=[MixtureChild(objective={"name": "clm", "max_prefix": 0.5})])
    assert type(cfg.children[0].objective).__name__ == "ClmConfig" and cfg.children[0].objective.max_prefix == 0.5
    with pytest.raises(ConfigError, match=r"objective.children\[0\].objective: objective.noise_density=0.9"):
        MixtureConfig(children=[MixtureChild(objective={"name": "alexatm_denoising", "noise_density": 0.9})])


@pytest.mark.parametrize("rates, message", [
    ([0.5, -0.1], r"objective.children\[1\].rate=-0.1: must be >= 0"),
    ([0.0, 0.0], r"objective.children\[\*\].rate=\[0.0, 0.0\]: must not all be 0"),
])
def test_bad_rates_are_refused(tokenizer, rates, message):
    with pytest.raises(ConfigError, match=message):
        MixtureConfig(children=[MixtureChild(objective=DENOISE, rate=rates[0]),
                                MixtureChild(objective=CLM, rate=rates[1])])


def test_empty_and_duplicate_children_are_refused(tokenizer):
    with pytest.raises(ConfigError, match="objective.children=\\[\\]: must list at least one"):
        MixtureConfig(children=[])
    with pytest.raises(ConfigError, match="must be unique"):
        MixtureConfig(children=[MixtureChild(objective=CLM), MixtureChild(objective=CLM)])
    with pytest.raises(ConfigError, match=r"objective.children\[0\].objective=.*must be a mapping with a `name`"):
        MixtureConfig(children=[MixtureChild(objective="clm")])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rates=st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3).filter(
    lambda r: sum(r) > 0.5))
def test_choice_frequencies_match_normalised_rates(tokenizer, seed, rates):
    """20k rows: each child's share within 5 binomial standard deviations of rate / sum(rates)."""
    mix = build(tokenizer, [{"objective": DENOISE, "rate": rates[0]}, {"objective": CLM, "rate": rates[1]},
                            {"objective": {"name": "clm", "packed": True}, "rate": rates[2], "label": "clm_packed"}])
    plan = mix.plan(20_000, np.random.default_rng(seed))
    expected = np.array(rates) / sum(rates)
    counts = np.bincount(plan.task, minlength=3)
    sd = np.sqrt(20_000 * expected * (1 - expected))
    assert (np.abs(counts - 20_000 * expected) <= 5 * sd + 1e-9).all(), (counts, expected)
    assert mix.names == ("alexatm_denoising", "clm", "clm_packed")
    # Children plan their own rows: AlexaTM's CLM asks for whole documents, the others for packed slices.
    np.testing.assert_array_equal(plan.document, plan.task == 1)


def test_plan_is_a_function_of_the_rng(tokenizer):
    mix = alexatm(tokenizer)
    a, b = mix.plan(100, np.random.default_rng(3)), mix.plan(100, np.random.default_rng(3))
    np.testing.assert_array_equal(a.task, b.task)
    assert not np.array_equal(a.task, mix.plan(100, np.random.default_rng(4)).task)


def test_rows_are_routed_to_their_child_and_merged_in_order(tokenizer):
    rng = np.random.default_rng(0)
    mix = alexatm(tokenizer, seq_len=32)
    plan = mix.plan(40, rng)
    # Whole documents (clm, up to 32 + 1 lookahead tokens) and packed slices (denoising, 31 + EOS).
    lengths = np.where(plan.document, rng.integers(2, 33, 40), 31)
    np.testing.assert_array_equal(plan.length, np.where(plan.document, 33, 31))
    tokens = np.where(np.arange(32)[None, :] < lengths[:, None], rng.integers(200, 900, (40, 32)), 0)
    f = mix(Rows(tokens, lengths, plan), rng)
    np.testing.assert_array_equal(f.objective, plan.task)
    clm_id = tokenizer.token_id("[CLM]")
    for r in range(40):
        text = tokens[r, : lengths[r]]
        assert f.targets[r, f.target_lengths[r] - 1] == tokenizer.eos_id  # complete documents, full rows
        if plan.task[r] == 1:  # clm: [CLM] + prefix, continuation
            assert f.inputs[r, 0] == clm_id
            np.testing.assert_array_equal(np.concatenate([f.inputs[r, 1 : f.input_lengths[r]],
                                                          f.targets[r, : f.target_lengths[r] - 1]]), text)
        else:  # denoising: the whole text is the target, 15% fewer tokens in the inputs
            np.testing.assert_array_equal(f.targets[r, : f.target_lengths[r] - 1], text)
            assert f.input_lengths[r] == 31 - round(31 * 0.15)
        assert (f.inputs[r, f.input_lengths[r]:] == 0).all() and (f.targets[r, f.target_lengths[r]:] == 0).all()


def test_mixtures_of_mixtures_name_and_route_their_leaves(tokenizer):
    inner = {"name": "mixture", "children": [{"objective": DENOISE, "rate": 1.0}, {"objective": CLM, "rate": 1.0}]}
    mix = build(tokenizer, [{"objective": inner, "rate": 0.5, "label": "alexatm"},
                            {"objective": {"name": "clm", "packed": True}, "rate": 0.5, "label": "gpt"}])
    assert mix.names == ("alexatm/alexatm_denoising", "alexatm/clm", "gpt")
    plan = mix.plan(3000, np.random.default_rng(1))
    shares = np.bincount(plan.task, minlength=3) / 3000
    assert np.allclose(shares, [0.25, 0.25, 0.5], atol=0.04)
    np.testing.assert_array_equal(plan.document, plan.task == 1)
