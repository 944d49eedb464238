"""PackedBatches end to end: a prepared corpus through sampler, CLM objective and decoder-only converter, in workers."""
from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from seqlab.config import DataConfig
from seqlab.data.loader import PackedBatches, StreamSpec, build_sampler, open_views
from seqlab.data.prepare import prepare_corpus
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConverter
from seqlab_plugins.objectives.clm import CausalLM, ClmConfig

SEQ_LEN = 32
BATCHES = 6


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer) -> Tokenizer:
    return Tokenizer(small_tokenizer)


@pytest.fixture(scope="module")
def objective(tokenizer) -> CausalLM:
    # Packed next-token prediction without a mode token: the model reads exactly the sampled tokens.
    return CausalLM(ClmConfig(name="clm", packed=True, mode_token=False), tokenizer=tokenizer, seq_len=SEQ_LEN)


@pytest.fixture(scope="module")
def spec(tmp_path_factory, small_tokenizer, embedded_corpus_dir, tokenizer, objective) -> StreamSpec:
    prepared = tmp_path_factory.mktemp("loader") / "prepared"
    prepare_corpus([embedded_corpus_dir], small_tokenizer, prepared, progress=False)
    return StreamSpec(prepared_dir=prepared, data=DataConfig(seq_len=SEQ_LEN, batch_size=4, val_fraction=0.1),
                      separator_id=tokenizer.token_id("[DOC]"), seed=7)


@pytest.fixture(scope="module")
def converter(tokenizer) -> DecoderOnlyConverter:
    return DecoderOnlyConverter(pad_id=tokenizer.pad_id, max_positions=SEQ_LEN, prefix_lm=True)


def load(dataset: PackedBatches, num_workers: int, n: int = BATCHES) -> list[dict[str, Any]]:
    # batch_size=None as in the data module: the dataset collates whole batches itself.
    return list(itertools.islice(DataLoader(dataset, batch_size=None, num_workers=num_workers), n))


def assert_same_batches(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.keys() == y.keys(), f"batch {i}"
        for key in x:
            same = torch.equal(x[key], y[key]) if isinstance(x[key], torch.Tensor) else x[key] == y[key]
            assert same, f"batch {i} differs in {key!r}"


def test_batches_are_the_sampler_stream_through_objective_and_converter(spec, objective, converter, tokenizer):
    batches = load(PackedBatches(spec, "train", objective, converter), num_workers=0)
    expected = itertools.islice(build_sampler(spec, "train", objective.plan).iterate(), BATCHES)
    saw_separator = False
    for batch, (step, rows, state) in zip(batches, expected):
        tokens = rows.tokens
        model_keys = converter(objective(rows, np.random.default_rng(0))).keys()  # CLM draws no noise
        assert batch.keys() == {*model_keys, "objective", "sampler_state", "feature_lengths"}
        assert batch["sampler_state"] == state and state["step"] == step + 1
        # Packed CLM without a mode token: no inputs, every token of the row a target.
        np.testing.assert_array_equal(batch["feature_lengths"], [[0] * spec.data.batch_size,
                                                                 [SEQ_LEN] * spec.data.batch_size])
        # Packed CLM: the model reads tokens[:-1] and predicts tokens[1:], every position a target, no padding.
        assert batch["input_ids"].shape == batch["labels"].shape == (spec.data.batch_size, SEQ_LEN - 1)
        assert torch.equal(batch["input_ids"], torch.from_numpy(tokens[:, :-1]))
        assert torch.equal(batch["labels"], torch.from_numpy(tokens[:, 1:]))
        assert batch["num_tokens"] == spec.data.batch_size * (SEQ_LEN - 1)
        assert torch.equal(batch["objective"], torch.zeros(spec.data.batch_size, dtype=torch.int64))
        assert not (tokens == tokenizer.pad_id).any()
        saw_separator |= bool((tokens == spec.separator_id).any())
    assert saw_separator, "short embedded documents must be packed with [DOC] between them"


@pytest.mark.parametrize("split, num_batches", [("train", None), ("val", 3)])
def test_two_workers_yield_the_batches_of_one_process_in_order(spec, objective, converter, split, num_batches):
    dataset = PackedBatches(spec, split, objective, converter, num_batches=num_batches)
    single = load(dataset, num_workers=0)
    assert_same_batches(load(dataset, num_workers=2), single)
    assert [b["sampler_state"]["step"] for b in single] == list(range(1, len(single) + 1))


def test_validation_is_three_fixed_batches_whatever_the_run_seed(spec, objective, converter):
    def validation(run_seed: int) -> list[dict[str, Any]]:
        # More requested than exist: a finite split must stop by itself after num_batches.
        return load(PackedBatches(replace(spec, seed=run_seed), "val", objective, converter, num_batches=3),
                    num_workers=0, n=10)

    first = validation(7)
    assert len(first) == 3
    assert_same_batches(validation(7), first)  # every evaluation sees the same batches
    assert_same_batches(validation(8), first)  # and so do runs with other training seeds
    # The held-out documents depend on the data alone, so no run seed lets training read them.
    held = [(v.name, v.docs.tolist()) for v in open_views(spec, "val")]
    assert held and [(v.name, v.docs.tolist()) for v in open_views(replace(spec, seed=8), "val")] == held


def test_resume_from_a_batch_state_continues_the_stream(spec, objective, converter):
    batches = load(PackedBatches(spec, "train", objective, converter), num_workers=0)
    resumed = PackedBatches(spec, "train", objective, converter, state=batches[1]["sampler_state"])
    assert_same_batches(load(resumed, num_workers=0, n=BATCHES - 2), batches[2:])


def test_resume_with_two_workers_continues_the_stream_in_order(spec, objective, converter):
    batches = load(PackedBatches(spec, "train", objective, converter), num_workers=0)
    resumed = PackedBatches(spec, "train", objective, converter, state=batches[0]["sampler_state"])
    loaded = load(resumed, num_workers=2, n=BATCHES - 1)
    assert [b["sampler_state"]["step"] for b in loaded] == [b["sampler_state"]["step"] for b in batches[1:]]
    assert_same_batches(loaded, batches[1:])


def test_languages_filter_keeps_only_the_named_languages(spec, objective):
    only = replace(spec, data=DataConfig(seq_len=SEQ_LEN, batch_size=4, val_fraction=0.1, languages=["hi", "ja"]))
    assert sorted(v.shard.lang for v in open_views(only, "train")) == ["hi", "ja"]
    full_val = {v.shard.lang: v.docs for v in open_views(spec, "val")}
    for view in open_views(only, "val"):  # filtering never moves documents between train and validation
        np.testing.assert_array_equal(view.docs, full_val[view.shard.lang])
    sampler = build_sampler(only, "train", objective.plan)
    assert {sampler.views[v].shard.lang for v in sampler._draw(0)[0].ravel()} <= {"hi", "ja"}
