"""Generation: cached == uncached, batched == one by one, logits equal to the training forward's, sampling
filters, EOS handling, config validation, and an unchanged training path after attention learned caching."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqlab.errors import ConfigError
from seqlab.interfaces import Features
from seqlab_plugins.architectures.attention import Attention, Context, LayerCache, padding_mask, prefix_lm_mask
from seqlab_plugins.architectures.components import TransformerConfig
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig
from seqlab_plugins.architectures.decoder_only.steps import DecoderOnlySteps
from seqlab_plugins.architectures.generation import GenerationConfig, generate, top_k_filter, top_p_filter
from seqlab_plugins.architectures.layers import Block
from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig
from seqlab_plugins.architectures.seq2seq.steps import Seq2SeqSteps

V = 40  # vocabulary
ARCHS = ["seq2seq", "prefix_lm", "causal_lm"]
NO_EOS = dict(eos_id=None)  # fixed-length generation, so every comparison covers all steps


def make(arch: str, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A tiny random model. The head is redrawn larger, untied: with the initial copied embeddings every token
    predicts itself, and near-uniform logits would make the comparisons weak."""
    torch.manual_seed(0)
    if arch == "seq2seq":
        model = Seq2Seq(Seq2SeqConfig(d_model=32, n_heads=4, max_positions=32), vocab_size=V)
    else:
        model = DecoderOnly(DecoderOnlyConfig(d_model=32, n_heads=4, max_positions=32, tie_embeddings=False,
                                              prefix_lm=arch == "prefix_lm"), vocab_size=V)
    model.init_weights()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    return model.to(dtype)


def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompts of different lengths: (4, 7) ids, (4,) lengths."""
    lengths = torch.tensor([5, 2, 7, 1])
    ids = torch.randint(3, V, (4, 7), generator=torch.Generator().manual_seed(1))
    return ids * (torch.arange(7) < lengths[:, None]), lengths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_cached_equals_uncached(arch, dtype):
    model, (ids, lengths) = make(arch, dtype), prompts()
    cached = generate(model, ids, lengths, GenerationConfig(max_new_tokens=16, **NO_EOS))
    uncached = generate(model, ids, lengths, GenerationConfig(max_new_tokens=16, use_cache=False, **NO_EOS))
    assert torch.equal(cached.tokens, uncached.tokens)
    assert len(set(cached.tokens.flatten().tolist())) > 8  # a real test: the model does not repeat one token


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_cached_equals_uncached_with_the_same_seed(arch):
    model, (ids, lengths) = make(arch), prompts()
    cfg = dict(max_new_tokens=12, do_sample=True, top_k=10, top_p=0.9, seed=3, **NO_EOS)
    cached = generate(model, ids, lengths, GenerationConfig(**cfg))
    assert torch.equal(cached.tokens, generate(model, ids, lengths, GenerationConfig(use_cache=False, **cfg)).tokens)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
def test_batched_equals_one_by_one(arch, use_cache):
    model, (ids, lengths) = make(arch), prompts()
    cfg = GenerationConfig(max_new_tokens=10, use_cache=use_cache, **NO_EOS)
    batched = generate(model, ids, lengths, cfg).tokens
    for row, n in enumerate(lengths.tolist()):
        alone = generate(model, ids[row : row + 1, :n], lengths[row : row + 1], cfg).tokens
        assert torch.equal(batched[row], alone[0]), row


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
def test_step_logits_equal_the_training_forward(arch, use_cache):
    """Teacher-force the same targets through the generation steps and through the training converter and
    forward: equal logits at every target position, so generation uses the training positions, prefix-LM
    mask and BOS shift (greedy tokens alone would hide a small difference)."""
    model, (ids, lengths) = make(arch), prompts()
    targets = torch.randint(3, V, (4, 6), generator=torch.Generator().manual_seed(2))
    steps_class = Seq2SeqSteps if arch == "seq2seq" else DecoderOnlySteps
    features = Features(ids.numpy(), lengths.numpy(), targets.numpy(), np.full(4, 6), np.zeros(4, np.int64))
    batch = type(model).feature_converter(model.cfg, pad_id=0)(features)
    model.eval()
    with torch.no_grad():
        steps = steps_class(model, ids, lengths, max_new_tokens=6, use_cache=use_cache)
        stepped = torch.stack([steps(None)] + [steps(targets[:, i]) for i in range(5)], dim=1)  # (B, 6, V)
        if arch == "seq2seq":
            logits = model(batch["input_ids"], batch["input_lengths"], batch["decoder_input_ids"])  # (B, T, V)
        else:
            logits = model(batch["input_ids"],
                           prefix_lm_mask(batch["lengths"], batch["prefix_lengths"], batch["input_ids"].shape[1]))
    labelled = batch["labels"] != -100  # row-major: each row's 6 targets in order
    assert torch.equal(batch["labels"][labelled].view(4, 6), targets)
    torch.testing.assert_close(stepped.reshape(-1, V), logits[labelled], rtol=0, atol=1e-10)


def test_block_cache_fed_in_chunks_equals_one_causal_pass():
    """Chunks of several tokens need the causal diagonal aligned to the newest keys; cross-attention keys and
    values are projected once and reused."""
    torch.manual_seed(0)
    block = Block(TransformerConfig(name="block", d_model=16, n_heads=2, d_ff=32, dropout=0.0), cross=True).double()
    memory, memory_mask = torch.randn(2, 5, 16, dtype=torch.float64), padding_mask(torch.tensor([5, 3]), 5)
    ctx = Context(None, True, memory=memory, memory_mask=memory_mask)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    cache = LayerCache(6)
    with torch.no_grad():
        full = block(x, ctx)
        parts = [block(x[:, a:b], ctx, cache=cache) for a, b in ((0, 3), (3, 4), (4, 6))]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-12)
    assert cache.length == 6 and cache.memory_kv[0].shape == (2, 2, 5, 8)
    with pytest.raises(ValueError, match="cache of capacity 6 cannot hold 7 positions"):
        block(x[:, :1], ctx, cache=cache)


@pytest.mark.parametrize("arch", ARCHS)
def test_top_k_1_and_tiny_temperature_sample_greedily(arch):
    model, (ids, lengths) = make(arch), prompts()
    greedy = generate(model, ids, lengths, GenerationConfig(max_new_tokens=10, **NO_EOS)).tokens
    top1 = generate(model, ids, lengths, GenerationConfig(max_new_tokens=10, do_sample=True, top_k=1, seed=0,
                                                          **NO_EOS)).tokens
    cold = generate(model, ids, lengths, GenerationConfig(max_new_tokens=10, do_sample=True, temperature=1e-6,
                                                          seed=0, **NO_EOS)).tokens
    assert torch.equal(top1, greedy) and torch.equal(cold, greedy)


def test_temperature_zero_is_rejected_in_favour_of_greedy():
    with pytest.raises(ConfigError, match=r"generation.temperature=0.0: must be > 0 .*do_sample=false"):
        GenerationConfig(do_sample=True, temperature=0.0)


def test_same_seed_same_samples_and_a_generator_works_like_the_seed():
    model, (ids, lengths) = make("prefix_lm"), prompts()
    cfg = GenerationConfig(max_new_tokens=12, do_sample=True, seed=7, **NO_EOS)
    first = generate(model, ids, lengths, cfg).tokens
    assert torch.equal(first, generate(model, ids, lengths, cfg).tokens)
    by_generator = generate(model, ids, lengths, GenerationConfig(max_new_tokens=12, do_sample=True, **NO_EOS),
                            generator=torch.Generator().manual_seed(7)).tokens
    assert torch.equal(first, by_generator)
    other = generate(model, ids, lengths, GenerationConfig(max_new_tokens=12, do_sample=True, seed=8, **NO_EOS))
    assert not torch.equal(first, other.tokens)


def test_top_p_keeps_the_smallest_set_with_mass_at_least_p():
    probs = torch.tensor([[0.2, 0.03, 0.4, 0.07, 0.3], [0.07, 0.3, 0.03, 0.2, 0.4]], dtype=torch.float64)
    for p, kept in [(0.3, {0.4}), (0.45, {0.4, 0.3}), (0.75, {0.4, 0.3, 0.2}), (0.95, {0.4, 0.3, 0.2, 0.07}),
                    (0.99, {0.4, 0.3, 0.2, 0.07, 0.03}), (1.0, {0.4, 0.3, 0.2, 0.07, 0.03})]:
        out = top_p_filter(probs.log(), p)
        for row in range(2):
            assert set(probs[row][out[row].isfinite()].tolist()) == kept, (p, row)


def test_top_p_matches_a_brute_force_nucleus():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 12, generator=gen, dtype=torch.float64) * 2
    ps = torch.rand(64, generator=gen, dtype=torch.float64)
    for row, p in zip(logits, ps.tolist()):
        sorted_probs = row.softmax(-1).sort(descending=True).values
        n = int((sorted_probs.cumsum(-1) < p).sum()) + 1  # fewest likeliest tokens reaching mass p
        kept = top_p_filter(row[None], p)[0].isfinite()
        assert int(kept.sum()) == n
        assert kept[row.argsort(descending=True)[:n]].all()


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 5.0, 2.0]])
    assert top_k_filter(logits, 2).isfinite().tolist() == [[False, True, False, True, False]]
    assert int(top_k_filter(torch.zeros(1, 6), 3).isfinite().sum()) == 3  # ties broken, still k


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_stops_a_row_pads_the_rest_and_ends_the_batch(arch, use_cache):
    model, (ids, lengths) = make(arch), prompts()
    free = generate(model, ids, lengths, GenerationConfig(max_new_tokens=12, **NO_EOS)).tokens
    eos = int(free[0, 3])  # row 0's fourth token, the EOS from now on
    first = [int((r == eos).nonzero()[0]) + 1 if (r == eos).any() else 12 for r in free]
    out = generate(model, ids, lengths, GenerationConfig(max_new_tokens=12, eos_id=eos, pad_id=V + 1,
                                                         use_cache=use_cache))
    assert out.lengths.tolist() == first and first[0] <= 4
    assert out.tokens.shape[1] == max(first)  # the batch ends with its last row
    for row, n in enumerate(first):
        assert torch.equal(out.tokens[row, :n], free[row, :n])
        assert (out.tokens[row, n:] == V + 1).all()
    alone = generate(model, ids[:1, :5], lengths[:1], GenerationConfig(max_new_tokens=12, eos_id=eos, pad_id=V + 1))
    assert alone.tokens.shape == (1, first[0]) and int(alone.tokens[0, -1]) == eos


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("use_cache", [True, False])
def test_a_stop_check_ends_rows_like_eos(arch, use_cache):
    """Rows the check declares done keep the token that made them done, are padded after it and stop counting;
    the batch ends with its last row, long before max_new_tokens."""
    model, (ids, lengths) = make(arch), prompts()
    free = generate(model, ids, lengths, GenerationConfig(max_new_tokens=12, **NO_EOS)).tokens
    ends = [3, 4, 5, 1]  # the step after which each row is done
    seen = []

    def stop(tokens: torch.Tensor) -> torch.Tensor:
        seen.append(tokens.clone())
        return torch.tensor([tokens.shape[1] >= n for n in ends])

    out = generate(model, ids, lengths, GenerationConfig(max_new_tokens=12, pad_id=V + 1, use_cache=use_cache,
                                                         **NO_EOS), stop=stop)
    assert out.lengths.tolist() == ends and out.tokens.shape == (4, 5) and len(seen) == 5
    for row, n in enumerate(ends):
        assert torch.equal(out.tokens[row, :n], free[row, :n])
        assert (out.tokens[row, n:] == V + 1).all()
    assert torch.equal(seen[-1], out.tokens)  # the check sees the tokens so far, padding after done rows
    assert [s.shape[1] for s in seen] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("arch", ARCHS)
def test_max_new_tokens_is_respected_and_bounded_by_positions(arch):
    model, (ids, lengths) = make(arch), prompts()
    out = generate(model, ids, lengths, GenerationConfig(max_new_tokens=5, **NO_EOS))
    assert out.tokens.shape == (4, 5) and out.lengths.tolist() == [5] * 4
    too_many = 33 if arch == "seq2seq" else 32 - 7 + 2  # seq2seq: decoder positions; else after a 7-token prompt
    with pytest.raises(ConfigError, match=f"generation.max_new_tokens={too_many}: .*max_positions=32"):
        generate(model, ids, lengths, GenerationConfig(max_new_tokens=too_many))
    generate(model, ids, lengths, GenerationConfig(max_new_tokens=too_many - 1))  # the largest that fits


def test_generation_restores_training_mode_and_refuses_empty_prompts():
    model, (ids, lengths) = make("seq2seq"), prompts()
    model.train()
    generate(model, ids, lengths, GenerationConfig(max_new_tokens=2))
    assert model.training
    with pytest.raises(ValueError, match=r"input_lengths must be in \[1, 7\]"):
        generate(model, ids, torch.tensor([5, 0, 7, 1]), GenerationConfig(max_new_tokens=2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=0), "generation.max_new_tokens=0: must be >= 1"),
    (dict(do_sample=True, temperature=-1.0), "generation.temperature=-1.0: must be > 0"),
    (dict(do_sample=True, top_k=0), "generation.top_k=0: must be >= 1 or null"),
    (dict(do_sample=True, top_p=0.0), r"generation.top_p=0.0: must be in \(0, 1\]"),
    (dict(do_sample=True, top_p=1.5), r"generation.top_p=1.5: must be in \(0, 1\]"),
    (dict(temperature=0.7), "generation.temperature=0.7: applies only to sampling"),
    (dict(top_k=5), "generation.top_k=5: applies only to sampling"),
    (dict(eos_id=-2), "generation.eos_id=-2: must be >= 0 or null"),
    (dict(pad_id=1), "generation.pad_id=1: must be >= 0 and differ from generation.eos_id=1"),
])
def test_config_validation_names_field_and_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GenerationConfig(**kwargs)


def attend(q, k, v, mask, causal, dropout):
    """The attention call before caching existed, verbatim."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                          dropout_p=dropout)


def old_self_attention(self, x, mask, causal, cache=None):
    """SelfAttention.forward before caching existed, verbatim."""
    assert cache is None
    B, T, C = x.shape
    q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
    y = attend(q, k, v, mask, causal, self.dropout if self.training else 0.0)
    return self.out(y.transpose(1, 2).reshape(B, T, C))


def old_cross_attention(self, x, memory, memory_mask, cache=None):
    """CrossAttention.forward before caching existed, verbatim."""
    assert cache is None
    B, T, C = x.shape
    S, H = memory.shape[1], self.n_heads
    q = self.q(x).view(B, T, H, C // H).transpose(1, 2)
    k, v = self.kv(memory).view(B, S, 2, H, C // H).permute(2, 0, 3, 1, 4)
    y = attend(q, k, v, memory_mask, False, self.dropout if self.training else 0.0)
    return self.out(y.transpose(1, 2).reshape(B, T, C))


def old_attention(self, x, ctx, cache=None):
    """Attention.forward (self or cross, multi-head, no positions in attention) as the pre-caching code."""
    if self.cross:
        return old_cross_attention(self, x, ctx.memory, ctx.memory_mask, cache)
    return old_self_attention(self, x, ctx.mask, ctx.causal, cache)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_training_loss_and_gradients_are_unchanged(arch, checkpointing, monkeypatch):
    model, (ids, lengths) = make(arch, torch.float32), prompts()
    model.cfg.activation_checkpointing = checkpointing
    model.train()
    targets = ids.flip(0)[:, :6]
    features = Features(ids.numpy(), lengths.numpy(), targets.numpy(), np.array([6, 3, 1, 4]), np.zeros(4, np.int64))
    batch = type(model).feature_converter(model.cfg, pad_id=0)(features)

    def loss_and_grads():
        model.zero_grad()
        out = model.loss(batch)
        (out.loss_sum.sum() / out.tokens.sum()).backward()
        return out.loss_sum.detach(), [p.grad.clone() for p in model.parameters()]

    new_loss, new_grads = loss_and_grads()
    monkeypatch.setattr(Attention, "forward", old_attention)
    old_loss, old_grads = loss_and_grads()
    assert torch.equal(new_loss, old_loss)
    assert all(torch.equal(a, b) for a, b in zip(new_grads, old_grads))
