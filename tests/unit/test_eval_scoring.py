"""SeqlabModel against plain hand computations on tiny models: teacher-forced scores, greedy generation (with
and without a forced target prefix), batching that changes nothing, and label_logprobs' column alignment."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlab.errors import DataError
from seqlab.evaluation.likelihood import Budget, build_request, score_continuations
from seqlab.evaluation.model import SeqlabModel, TokenRequest
from seqlab.registry import ARCHITECTURES, load_plugins
from seqlab.tokenizer import BOS_ID, EOS_ID, Tokenizer
from seqlab_plugins.architectures.attention import prefix_lm_mask
from seqlab_plugins.architectures.loss import IGNORE_INDEX, label_logprobs
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig

V = 64  # a small vocabulary: ids below it are also ids of the shipped tokenizer (pad 0, EOS 1, BOS 2)
MAX_POSITIONS = 48
ARCHS = ["seq2seq", "prefix_lm", "causal_lm"]


def config(arch: str):
    if arch == "seq2seq":
        return Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=64,
                             max_positions=MAX_POSITIONS)
    return DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_layers=2, d_ff=64,
                             max_positions=MAX_POSITIONS, tie_embeddings=False, prefix_lm=arch == "prefix_lm")


def build(arch: str) -> tuple[torch.nn.Module, object]:
    """A tiny random model whose predictions vary: the head is redrawn large (at init, near-uniform logits would
    make every comparison weak), and EOS is made likely enough that some greedy rows stop early."""
    load_plugins()
    cfg = config(arch)
    # A seed under which every architecture's greedy rows stop at several lengths (the generation tests check
    # that they do, so a seed that made every row run to the limit would fail, not pass weakly).
    torch.manual_seed(6)
    model = ARCHITECTURES.build(cfg, vocab_size=V)
    model.init_weights()
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight, std=1.0)
        model.head.weight[EOS_ID] *= 1.6
    return model.eval(), cfg


def seqlab_model(arch: str, tokenizer: Tokenizer, batch_size: int) -> SeqlabModel:
    model, cfg = build(arch)
    return SeqlabModel(model, tokenizer, cfg, name=arch, batch_size=batch_size)


def ids(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in rng.integers(4, V, n))  # no special ids


def scoring_requests() -> list[TokenRequest]:
    """Inputs, prefixes and continuations of different lengths, in no particular order."""
    rng = np.random.default_rng(0)
    shapes = [(5, 0, 3), (1, 0, 1), (7, 4, 2), (3, 2, 5), (2, 0, 4), (6, 6, 1), (4, 1, 3), (1, 3, 2), (3, 0, 0)]
    return [TokenRequest(ids(rng, a), ids(rng, b), ids(rng, c)) for a, b, c in shapes]


def hand_score(model: torch.nn.Module, arch: str, req: TokenRequest) -> float:
    """Sum of log p(continuation) from one unpadded forward pass of the model, written out plainly."""
    targets = list(req.target_prefix) + list(req.continuation)
    if not req.continuation:
        return 0.0
    with torch.no_grad():
        if arch == "seq2seq":
            inputs = torch.tensor([req.inputs])
            decoder_ids = torch.tensor([[BOS_ID] + targets[:-1]])  # decoder position j predicts targets[j]
            logits = model(inputs, torch.tensor([len(req.inputs)]), decoder_ids)[0].double()
            logp = logits.log_softmax(-1)
            first = len(req.target_prefix)
            return sum(float(logp[j, targets[j]]) for j in range(first, len(targets)))
        full = list(req.inputs) + targets
        fed = torch.tensor([full[:-1]])  # position t predicts full[t + 1]
        T = fed.shape[1]
        bidirectional = len(req.inputs) if arch == "prefix_lm" else 0
        mask = prefix_lm_mask(torch.tensor([T]), torch.tensor([bidirectional]), T)
        logp = model(fed, mask)[0].double().log_softmax(-1)
        start = len(req.inputs) + len(req.target_prefix)  # index in `full` of the first continuation token
        return sum(float(logp[t - 1, full[t]]) for t in range(start, len(full)))


@pytest.mark.parametrize("arch", ARCHS)
def test_score_equals_a_hand_computation(arch, tokenizer):
    ours = seqlab_model(arch, tokenizer, batch_size=3)  # 9 requests: 3 batches, sorted by length
    requests = scoring_requests()
    got = ours.score(requests)
    expected = np.array([hand_score(ours.model, arch, r) for r in requests])
    assert got.dtype == np.float64 and got.shape == (len(requests),)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got[-1] == 0.0  # nothing to score
    assert (got[:-1] < -1.0).all()  # real log-likelihoods of a peaked random model, not zeros
    assert len(set(np.round(got, 3).tolist())) == len(requests)  # every request scored on its own


@pytest.mark.parametrize("arch", ARCHS)
def test_score_does_not_depend_on_batching_or_order(arch, tokenizer):
    requests = scoring_requests()
    one_by_one = seqlab_model(arch, tokenizer, batch_size=1).score(requests)
    all_at_once = seqlab_model(arch, tokenizer, batch_size=16).score(requests[::-1])[::-1]
    np.testing.assert_allclose(all_at_once, one_by_one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_target_prefix_is_context_not_score(arch, tokenizer):
    """The forced prefix conditions the continuation (so it changes its score) but adds no term of its own."""
    ours = seqlab_model(arch, tokenizer, batch_size=4)
    inputs, prefix, cont = (5, 9, 11, 13), (17, 19, 23), (29, 31)
    with_prefix, without, prefix_only = ours.score([TokenRequest(inputs, prefix, cont), TokenRequest(inputs, (), cont),
                                                    TokenRequest(inputs, prefix, ())])
    assert prefix_only == 0.0
    assert abs(with_prefix - without) > 1e-3
    as_continuation = ours.score([TokenRequest(inputs, (), prefix + cont), TokenRequest(inputs, (), prefix)])
    # log p(prefix + cont) = log p(prefix) + log p(cont | prefix): the chain rule across the two calls
    assert as_continuation[0] == pytest.approx(as_continuation[1] + with_prefix, abs=1e-5)


def hand_greedy(model: torch.nn.Module, arch: str, req: TokenRequest, max_new_tokens: int) -> list[int]:
    """Greedy decoding by re-running the full forward pass on the whole sequence every step (no cache)."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            if arch == "seq2seq":
                decoder_ids = torch.tensor([[BOS_ID, *req.target_prefix, *out]])
                logits = model(torch.tensor([req.inputs]), torch.tensor([len(req.inputs)]), decoder_ids)[0, -1]
            else:
                seq = torch.tensor([[*req.inputs, *req.target_prefix, *out]])
                T = seq.shape[1]
                bidirectional = len(req.inputs) if arch == "prefix_lm" else 0
                logits = model(seq, prefix_lm_mask(torch.tensor([T]), torch.tensor([bidirectional]), T))[0, -1]
            token = int(logits.argmax())
            if token == EOS_ID:
                break
            out.append(token)
    return out


def generation_requests() -> list[TokenRequest]:
    """Prompts of different lengths; some with a target prefix (denoising mode: the prompt again), some with
    the same prefix length so that batches hold several rows."""
    rng = np.random.default_rng(1)
    plain = [TokenRequest(ids(rng, n)) for n in (6, 1, 4, 9, 3)]
    denoising = [TokenRequest(r.inputs, r.inputs) for r in plain[:3]]
    same_prefix_length = [TokenRequest(ids(rng, n), ids(rng, 3)) for n in (2, 5, 7)]
    return plain + denoising + same_prefix_length


MAX_NEW = 8


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_equals_a_hand_loop(arch, tokenizer):
    ours = seqlab_model(arch, tokenizer, batch_size=3)
    requests = generation_requests()
    got = ours.generate(requests, MAX_NEW)
    expected = [hand_greedy(ours.model, arch, r, MAX_NEW) for r in requests]
    assert got == expected
    lengths = {len(g) for g in got}
    assert len(lengths) > 1 and max(lengths) == MAX_NEW  # some rows stopped at EOS, which is dropped
    assert all(EOS_ID not in g for g in got)
    # The forced prefix matters: the denoising requests continue differently from their plain twins.
    assert any(got[i] != got[5 + i] for i in range(3))


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_generation_equals_one_request_at_a_time(arch, tokenizer):
    ours = seqlab_model(arch, tokenizer, batch_size=4)
    requests = generation_requests()
    batched = ours.generate(requests, MAX_NEW)
    assert batched == [ours.generate([r], MAX_NEW)[0] for r in requests]
    assert batched[::-1] == ours.generate(requests[::-1], MAX_NEW)  # the order of requests does not matter


@pytest.mark.parametrize("arch", ARCHS)
def test_prefixes_of_every_length_in_one_batch_generate_as_alone(arch, tokenizer):
    # One batch holds rows without a prefix and with prefixes of 1 to 9 tokens: the longer ones are fed step by
    # step while the others generate, and every row still equals its own unbatched greedy decoding.
    ours = seqlab_model(arch, tokenizer, batch_size=64)
    requests = generation_requests() + [TokenRequest(r.inputs, r.inputs) for r in generation_requests()[3:5]]
    prefixes = [len(r.target_prefix) for r in requests]
    assert len(set(prefixes)) >= 5
    steps = []
    hook = ours.model.head.register_forward_hook(lambda *_: steps.append(1))  # one head call per step
    batched = ours.generate(requests, MAX_NEW)
    hook.remove()
    assert len(steps) <= max(prefixes) - min(prefixes) + MAX_NEW  # one batch, not one per prefix length
    assert batched == [hand_greedy(ours.model, arch, r, MAX_NEW) for r in requests]


def test_generation_and_scoring_leave_training_mode_alone(tokenizer):
    ours = seqlab_model("seq2seq", tokenizer, batch_size=2)
    ours.model.train()
    ours.score(scoring_requests()[:2])
    ours.generate(generation_requests()[:2], 2)
    assert ours.model.training


@pytest.mark.parametrize("mode", ["clm", "denoising"])
@pytest.mark.parametrize("arch", ARCHS)
def test_the_prompt_budget_is_exactly_what_the_model_holds(arch, mode, tokenizer):
    """Prompts cut to the harness's limit fit the model; one token more does not (the limit wastes nothing)."""
    ours = seqlab_model(arch, tokenizer, batch_size=4)
    mode_ids = [ours.special_id("[CLM]")] if mode == "clm" else []
    budget = Budget(ours, mode, len(mode_ids))
    prompt = list(range(4, 4 + 60))  # longer than MAX_POSITIONS: always cut
    continuation = (7, 8, 9)
    limit = budget.prompt_limit(len(continuation))
    request, cut = build_request(prompt, mode_ids, mode, continuation, limit)
    assert cut and ours.score([request])[0] < 0
    over, _ = build_request(prompt, mode_ids, mode, continuation, limit + 1)
    with pytest.raises((DataError, ValueError)):
        ours.score([over])
    limit = budget.prompt_limit(MAX_NEW)
    request, _ = build_request(prompt, mode_ids, mode, (), limit)
    assert len(ours.generate([request], MAX_NEW)[0]) <= MAX_NEW
    over, _ = build_request(prompt, mode_ids, mode, (), limit + 1)
    with pytest.raises((DataError, ValueError)):
        ours.generate([over], MAX_NEW)


# label_logprobs: the log-probability of each row's j-th label lands in column j, whatever the layout.

def _head_and_hidden(B: int, T: int, C: int = 8, vocab: int = 11):
    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(C, vocab, bias=False).requires_grad_(False)
    head.weight.copy_(torch.randn(vocab, C, generator=gen))
    return head, torch.randn(B, T, C, generator=gen)


def test_label_logprobs_aligns_decoder_only_labels_to_columns():
    """Decoder-only layout: a row with li inputs has its first label at position li - 1."""
    head, hidden = _head_and_hidden(3, 9)
    starts, targets = [2, 0, 5], [[4, 7, 1], [3, 9, 2, 6, 5], [8]]
    labels = torch.full((3, 9), IGNORE_INDEX)
    for row, (s, t) in enumerate(zip(starts, targets)):
        labels[row, s: s + len(t)] = torch.tensor(t)
    out = label_logprobs(hidden, head, labels)
    assert out.shape == (3, 5) and out.dtype == torch.float32
    logp = head(hidden).log_softmax(-1)
    for row, (s, t) in enumerate(zip(starts, targets)):
        for j, token in enumerate(t):
            assert float(out[row, j]) == pytest.approx(float(logp[row, s + j, token]), abs=1e-6), (row, j)
        assert (out[row, len(t):] == 0).all()  # past the row's last label


def test_label_logprobs_on_the_seq2seq_layout_and_without_labels():
    head, hidden = _head_and_hidden(2, 4)
    labels = torch.tensor([[5, 6, IGNORE_INDEX, IGNORE_INDEX], [1, 2, 3, 4]])  # labels = targets from column 0
    out = label_logprobs(hidden, head, labels)
    logp = head(hidden).log_softmax(-1)
    expected = torch.stack([logp[b].gather(1, labels[b].clamp(min=0)[:, None])[:, 0] for b in range(2)])
    expected[0, 2:] = 0
    torch.testing.assert_close(out, expected.float(), rtol=0, atol=1e-6)
    none = label_logprobs(hidden, head, torch.full((2, 4), IGNORE_INDEX))
    assert none.shape == (2, 0)


def test_converter_labels_feed_label_logprobs_in_target_order():
    """Through the decoder-only converter: inputs of different lengths put target j of every row at column j."""
    from seqlab.interfaces import Features
    from seqlab_plugins.architectures.decoder_only import DecoderOnlyConverter

    inputs = np.array([[11, 12, 13], [21, 0, 0]])
    targets = np.array([[31, 32, 0], [41, 42, 43]])
    batch = DecoderOnlyConverter(0, 16, prefix_lm=True)(Features(inputs, np.array([3, 1]), targets,
                                                                 np.array([2, 3]), np.zeros(2, np.int64)))
    assert batch["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 31, 32], [41, 42, 43, IGNORE_INDEX]]
    head, hidden = _head_and_hidden(2, 4, vocab=50)
    out = label_logprobs(hidden, head, batch["labels"])
    logp = head(hidden).log_softmax(-1)
    assert out.shape == (2, 3)
    assert float(out[0, 0]) == pytest.approx(float(logp[0, 2, 31]), abs=1e-6)
    assert float(out[0, 1]) == pytest.approx(float(logp[0, 3, 32]), abs=1e-6)
    assert float(out[0, 2]) == 0.0
    assert [float(out[1, j]) for j in range(3)] == pytest.approx([float(logp[1, j, t]) for j, t in
                                                                  enumerate((41, 42, 43))], abs=1e-6)


def test_a_candidate_without_tokens_is_an_error_not_a_winning_zero(tokenizer):
    model = seqlab_model("causal_lm", tokenizer, batch_size=4)
    with pytest.raises(DataError, match=r"task topics: example 1 .* encodes to no tokens \(''\)"):
        score_continuations(model, "topics", "clm", ["Topic:", "Topic:"], [("sport", "music"), ("sport", "")],
                            Budget(model, "clm", 0), [], progress=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_an_empty_prompt_without_a_mode_token_scores_every_continuation_token(arch, tokenizer):
    model = seqlab_model(arch, tokenizer, batch_size=4)
    continuation = (17, 23, 9)
    request, truncated = build_request([], [], "clm", continuation, limit=40)
    assert request == TokenRequest((EOS_ID,), (), continuation) and not truncated
    got = float(model.score([request])[0])
    assert got == pytest.approx(hand_score(model.model, arch, request), abs=1e-5)
    if arch != "seq2seq":
        # Without the stand-in context a decoder-only model predicts only the last two tokens: a higher sum.
        assert got < float(model.score([TokenRequest((), (), continuation)])[0]) - 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_flags_say_whether_greedy_decoding_produces_the_continuation(arch, tokenizer):
    model = seqlab_model(arch, tokenizer, batch_size=3)
    rng = np.random.default_rng(1)
    requests, expected = [], []
    for n in (2, 3, 4, 5, 6):
        base = TokenRequest(ids(rng, 5), ids(rng, 1), ())
        produced = tuple(model.generate([base], n)[0])  # greedy, up to EOS (dropped)
        if not produced:
            continue
        other = 4 + (produced[-1] - 3) % (V - 4)  # another ordinary id in place of the last one
        requests += [TokenRequest(base.inputs, base.target_prefix, produced),
                     TokenRequest(base.inputs, base.target_prefix, produced[:-1] + (other,))]
        expected += [True, False]
    assert len(requests) >= 6
    scores, greedy = model.score_greedy(requests)
    np.testing.assert_allclose(scores, model.score(requests), rtol=1e-6, atol=1e-6)
    assert greedy.tolist() == expected
