"""The packing sampler, checked token by token on in-memory shards whose every token says where it came from.

Token ids encode (shard, document, position), so an emitted batch can be decoded back to the exact document
positions it was cut from: packing, epochs, held-out documents, resume and replica splits are all checked
against that ground truth rather than against the sampler's own bookkeeping.
"""
from __future__ import annotations

import itertools
import json
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seqlab.data.sampler import PackingSampler, ShardView, sampling_table, split_views
from seqlab.data.store import Shard
from seqlab.errors import ConfigError, DataError
from seqlab.interfaces import RowPlan
from seqlab.tokenizer import PAD_ID

SEP = 0  # separator id; every document token is >= 1, so separators are unambiguous
DOC_BASE = 10**6  # positions per document: test documents are far shorter
SHARD_BASE = 10**12  # documents per shard, times DOC_BASE
PROPERTY = settings(max_examples=100, deadline=None)  # the whole file runs in about 3 s


def encode(shard: int, doc: np.ndarray | int, pos: np.ndarray | int) -> np.ndarray:
    return 1 + shard * SHARD_BASE + np.asarray(doc, dtype=np.int64) * DOC_BASE + np.asarray(pos, dtype=np.int64)


def decode(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shard, document, position) of each non-separator token id."""
    shard, rest = np.divmod(np.asarray(tokens, dtype=np.int64) - 1, SHARD_BASE)
    doc, pos = np.divmod(rest, DOC_BASE)
    return shard, doc, pos


def make_shard(index: int, lengths: list[int], source: str = "web", lang: str = "en") -> Shard:
    """Shard number `index` whose document d holds encode(index, d, 0..len-1); plain arrays stand in for memmaps."""
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(len(lengths_arr) + 1, dtype=np.int64)
    np.cumsum(lengths_arr, out=offsets[1:])
    doc = np.repeat(np.arange(len(lengths_arr)), lengths_arr)
    return Shard(source, lang, encode(index, doc, np.arange(offsets[-1]) - offsets[doc]), offsets)


def whole(shard: Shard) -> ShardView:
    return ShardView(shard, np.arange(shard.n_docs))


def make_sampler(views: list[ShardView], *, raw_len: int, batch_size: int, seed: int, alpha: float = 0.5,
                 weights: dict[str, float] | None = None, num_replicas: int = 1, rank: int = 0) -> PackingSampler:
    table = sampling_table(views, alpha, weights or {})
    return PackingSampler(views, table.probs, planner=lambda n, rng: RowPlan.uniform(n, raw_len),
                          batch_size=batch_size, separator_id=SEP, seed=seed, num_replicas=num_replicas, rank=rank)


Batch = tuple[int, np.ndarray, dict]  # (step, tokens (B, raw_len), sampler state after the step)


def take(sampler: PackingSampler, steps: int, consumer: int = 0, num_consumers: int = 1) -> list[Batch]:
    """The first `steps` batches that `consumer` owns."""
    return [(step, rows.tokens, state)
            for step, rows, state in itertools.islice(sampler.iterate(consumer, num_consumers), steps)]


def rows_by_shard(batches: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Each shard's emitted tokens, rows concatenated in (step, row) order: the order the sampler consumes them."""
    rows: dict[int, list[np.ndarray]] = defaultdict(list)
    for batch in batches:
        for row in batch:
            shards = np.unique(decode(row[row != SEP])[0])
            assert len(shards) == 1, f"a sequence mixes shards {shards}: views must not be packed together"
            rows[int(shards[0])].append(row)
    return {s: np.concatenate(r) for s, r in rows.items()}


def check_stream(stream: np.ndarray, shard: Shard, index: int, docs: np.ndarray) -> list[list[int]]:
    """Assert `stream` is a prefix of a view's stream; return the document order of each epoch it began.

    A view's stream is its documents, each in full and in token order, each followed by exactly one separator,
    every document exactly once per epoch. Only the last document may be cut short (the stream goes on later).
    """
    pieces = np.split(stream, np.flatnonzero(stream == SEP) + 1)  # each ends with SEP, except the last
    order = []
    for piece in pieces:
        body = piece[:-1] if piece.size and piece[-1] == SEP else piece
        if piece is pieces[-1] and not body.size:
            break
        assert body.size, "two separators in a row: an empty document, or a doubled separator"
        s, d, pos = decode(body)
        assert (s == index).all() and (d == d[0]).all(), "a document's tokens are interleaved with another's"
        assert np.array_equal(pos, np.arange(body.size)), f"document {d[0]} is not emitted from its start in order"
        complete = piece is not pieces[-1]
        length = shard.lengths[d[0]]
        assert body.size == length if complete else body.size <= length, f"document {d[0]} is cut short"
        order.append(int(d[0]))
    epochs = [order[i : i + len(docs)] for i in range(0, len(order), len(docs))]
    for epoch in epochs:
        assert len(set(epoch)) == len(epoch), f"a document appears twice in one epoch: {epoch}"
        assert set(epoch) <= set(docs.tolist()), f"documents {set(epoch) - set(docs.tolist())} are not in the view"
    return epochs


# --- alpha sampling ----------------------------------------------------------------------------------------

# (source, lang, tokens): English dominates, Swahili is low-resource; books are upweighted 2.5x.
CORPUS = [("web", "en", 9000), ("books", "en", 3000), ("web", "fr", 2000), ("books", "fr", 1000), ("web", "sw", 300)]
WEIGHTS = {"web": 1.0, "books": 2.5}


def corpus_views() -> list[ShardView]:
    # 100-token documents, so a shard's token count is exactly the one listed.
    return [whole(make_shard(i, [100] * (n // 100), source, lang)) for i, (source, lang, n) in enumerate(CORPUS)]


def expected_probs(alpha: float) -> tuple[dict[str, float], dict[str, float], list[float]]:
    """p, q per language and the probability of each view, computed from the definitions by hand."""
    weighted = [WEIGHTS[source] * n for source, _, n in CORPUS]
    lang_tokens: dict[str, float] = defaultdict(float)
    for (_, lang, _), w in zip(CORPUS, weighted):
        lang_tokens[lang] += w
    p = {lang: t / sum(lang_tokens.values()) for lang, t in lang_tokens.items()}
    q = {lang: p[lang] ** alpha / sum(x**alpha for x in p.values()) for lang in p}
    views = [q[lang] * w / lang_tokens[lang] for (_, lang, _), w in zip(CORPUS, weighted)]
    return p, q, views


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_draws_follow_alpha_sampling_within_five_sigma(alpha):
    p, q, view_probs = expected_probs(alpha)
    views = corpus_views()
    table = sampling_table(views, alpha, WEIGHTS)
    assert table.languages == sorted(p)
    np.testing.assert_allclose(table.p, [p[lang] for lang in table.languages], rtol=1e-12)
    np.testing.assert_allclose(table.q, [q[lang] for lang in table.languages], rtol=1e-12)
    np.testing.assert_allclose(table.probs, view_probs, rtol=1e-12)
    if alpha == 1.0:
        np.testing.assert_allclose(table.q, table.p, rtol=1e-12)
    else:  # alpha < 1 must upsample the low-resource language, which is the point of it
        assert q["sw"] > p["sw"] and q["en"] < p["en"]

    # 200k sequences through the sampler's own draw (not rng.choice on the table), 4 replicas x 500 rows.
    sampler = make_sampler(views, raw_len=8, batch_size=500, seed=1234, alpha=alpha, weights=WEIGHTS,
                           num_replicas=4)
    choice = np.concatenate([sampler._draw(step)[0].ravel() for step in range(100)])
    n = choice.size
    counts = np.bincount(choice, minlength=len(views))
    # Each count is Binomial(n, prob): 5 standard deviations make a false alarm ~1e-6 per check.
    for v, prob in enumerate(view_probs):
        assert abs(counts[v] - n * prob) <= 5 * np.sqrt(n * prob * (1 - prob)), (CORPUS[v], counts[v] / n, prob)
    for lang, prob in q.items():
        count = sum(counts[v] for v, (_, view_lang, _) in enumerate(CORPUS) if view_lang == lang)
        assert abs(count - n * prob) <= 5 * np.sqrt(n * prob * (1 - prob)), (lang, count / n, prob)


@st.composite
def weighted_views(draw) -> tuple[list[ShardView], dict[str, float], float]:
    sources = ["web", "books", "wiki"]
    names = draw(st.lists(st.tuples(st.sampled_from(sources), st.sampled_from(["en", "fr", "sw"])),
                          min_size=1, max_size=6, unique=True))
    views = [whole(make_shard(i, draw(st.lists(st.integers(1, 50), min_size=1, max_size=5)), source, lang))
             for i, (source, lang) in enumerate(names)]
    weights = {source: draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])) for source in sources}
    return views, weights, draw(st.floats(0.05, 1.0))


@PROPERTY
@given(weighted_views())
def test_table_splits_languages_by_alpha_and_sources_by_weighted_tokens(case):
    views, weights, alpha = case
    weighted = np.array([weights[v.shard.source] * v.n_tokens for v in views])
    if weighted.sum() == 0:
        with pytest.raises(ConfigError, match="weight 0"):
            sampling_table(views, alpha, weights)
        return
    table = sampling_table(views, alpha, weights)
    langs = np.array([v.shard.lang for v in views])
    assert table.probs.sum() == pytest.approx(1.0) and (table.probs >= 0).all()
    assert (table.probs[weighted == 0] == 0).all(), "a source with weight 0 must never be drawn"
    for i, lang in enumerate(table.languages):
        mine = langs == lang
        assert table.probs[mine].sum() == pytest.approx(table.q[i], abs=1e-12)
        if weighted[mine].sum() > 0:
            np.testing.assert_allclose(table.probs[mine], table.q[i] * weighted[mine] / weighted[mine].sum(),
                                       atol=1e-12)
    np.testing.assert_allclose(table.q, table.p**alpha / (table.p**alpha).sum(), atol=1e-12)
    present = table.p > 0
    smallest = np.flatnonzero(present)[np.argmin(table.p[present])]
    assert table.q[smallest] >= table.p[smallest] - 1e-12, "alpha <= 1 never downsamples the smallest language"


def test_weight_zero_removes_a_source_and_its_language_when_alone():
    views = corpus_views()
    table = sampling_table(views, 0.5, {**WEIGHTS, "books": 0.0})
    assert table.probs[[1, 3]].tolist() == [0.0, 0.0]
    sampler = make_sampler(views, raw_len=4, batch_size=1000, seed=0, weights={**WEIGHTS, "books": 0.0})
    assert not np.isin(sampler._draw(0)[0], [1, 3]).any()

    table = sampling_table(views, 0.5, {"web": 0.0})  # Swahili only has web text: its language disappears
    assert table.q[table.languages.index("sw")] == 0.0
    assert table.probs.sum() == pytest.approx(1.0)


def test_all_weights_zero_or_no_views_is_an_error():
    with pytest.raises(ConfigError, match=r"data.weights=\{'web': 0.0, 'books': 0.0\}"):
        sampling_table(corpus_views(), 0.5, {"web": 0.0, "books": 0.0})
    with pytest.raises(DataError, match="no documents"):
        sampling_table([], 0.5, {})


# --- packing -----------------------------------------------------------------------------------------------

@PROPERTY
@given(lengths=st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=10), min_size=1, max_size=3),
       raw_len=st.integers(2, 16), batch_size=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_each_view_is_a_stream_of_whole_documents_separated_once(lengths, raw_len, batch_size, seed):
    shards = [make_shard(i, doc_lengths, lang=f"l{i}") for i, doc_lengths in enumerate(lengths)]
    sampler = make_sampler([whole(s) for s in shards], raw_len=raw_len, batch_size=batch_size, seed=seed)
    stream_len = [s.n_tokens + s.n_docs for s in shards]
    batches = [tokens for _, tokens, _ in take(sampler, 3 * sum(stream_len) // (raw_len * batch_size) + 3)]
    assert all(b.shape == (batch_size, raw_len) and b.dtype == np.int64 for b in batches)
    for index, stream in rows_by_shard(batches).items():
        epochs = check_stream(stream, shards[index], index, np.arange(shards[index].n_docs))
        # The rows drawn from a view are its stream from the start: a long document continues in the next
        # sequence drawn from that view, whatever other views were drawn in between.
        assert stream.size == sampler.cursors[index]
        full = stream.size // stream_len[index]
        assert len(epochs) >= full and all(sorted(e) == list(range(shards[index].n_docs)) for e in epochs[:full])


def test_long_document_continues_in_the_next_sequence_of_its_view():
    long_doc, short = make_shard(0, [27], lang="en"), make_shard(1, [2, 3], lang="fr")
    sampler = make_sampler([whole(long_doc), whole(short)], raw_len=8, batch_size=2, seed=3)
    stream = rows_by_shard([tokens for _, tokens, _ in take(sampler, 20)])[0]
    # One 27-token document and its separator per epoch: sequences cut it at 8, 16, 24, then wrap around.
    epoch = np.append(encode(0, 0, np.arange(27)), SEP)
    assert np.array_equal(stream, np.resize(epoch, stream.size)) and stream.size >= 2 * epoch.size


def test_epochs_reshuffle_and_orders_depend_on_the_seed():
    shard = make_shard(0, list(range(1, 21)))
    first_epochs = []
    for seed in range(20):
        sampler = make_sampler([whole(shard)], raw_len=16, batch_size=4, seed=seed)
        stream = np.concatenate([t.ravel() for _, t, _ in take(sampler, 2 * (shard.n_tokens + 20) // 64 + 1)])
        epochs = check_stream(stream, shard, 0, np.arange(20))
        # Two equal orders of 20 documents have probability 1/20! per seed: a failure here is not bad luck.
        assert epochs[0] != epochs[1], f"seed {seed}: epoch 2 repeats epoch 1's order"
        assert epochs[0] != sorted(epochs[0]), f"seed {seed}: epoch 1 is not shuffled"
        first_epochs.append(tuple(epochs[0]))
    assert len(set(first_epochs)) == 20, "different seeds must give different document orders"


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), val_fraction=st.floats(0.05, 0.49))
def test_training_never_reads_held_out_documents(seed, val_fraction):
    shards = [make_shard(i, [(7 * d + i) % 23 + 1 for d in range(12)], lang=lang) for i, lang in enumerate("abc")]
    train, val = split_views(shards, val_fraction)
    held = {(i, int(d)) for i, view in enumerate(val) for d in view.docs}
    for views, allowed in ((train, None), (val, held)):
        sampler = make_sampler(views, raw_len=8, batch_size=4, seed=seed)
        stream_len = np.array([v.n_tokens + len(v.docs) for v in views])
        seen: set[tuple[int, int]] = set()
        for _, rows, state in sampler.iterate():  # until every view has finished an epoch
            s, d, _ = decode(rows.tokens[rows.tokens != SEP])
            seen |= set(zip(s.tolist(), d.tolist()))
            if (np.asarray(state["cursors"]) >= stream_len).all():
                break
        if allowed is None:
            assert not seen & held, f"training read held-out documents {sorted(seen & held)}"
            assert seen == {(i, int(d)) for i, view in enumerate(train) for d in view.docs}
        else:
            assert seen == allowed, "validation must read exactly the held-out documents"


# --- split_views -------------------------------------------------------------------------------------------

@PROPERTY
@given(n_docs=st.lists(st.integers(1, 300), min_size=1, max_size=4), val_fraction=st.floats(0.0, 0.49),
       split_seed=st.integers(0, 2**16))
def test_split_is_a_partition_that_respects_the_fraction(n_docs, val_fraction, split_seed):
    shards = [make_shard(i, [1] * n, lang=f"l{i}") for i, n in enumerate(n_docs)]
    train, val = split_views(shards, val_fraction, seed=split_seed)
    assert len(train) == len(shards) and all(view.shard is shard for view, shard in zip(train, shards))
    val_by_shard = {v.name: v.docs for v in val}
    for shard, view in zip(shards, train):
        held = val_by_shard.get(shard.name, np.array([], dtype=np.int64))
        assert (np.diff(view.docs) > 0).all() and (np.diff(held) > 0).all()
        assert np.array_equal(np.union1d(view.docs, held), np.arange(shard.n_docs)), "a document was lost"
        assert not np.intersect1d(view.docs, held).size, "a document is in both splits"
        n, n_val = shard.n_docs, len(held)
        if n == 1 or val_fraction == 0:
            assert n_val == 0 and shard.name not in val_by_shard
        else:
            # Rounding is within half a document, except that a shard always keeps one of each.
            assert 1 <= n_val <= n - 1
            assert abs(n_val - n * val_fraction) <= (1.0 if n_val == 1 else 0.5)


def test_split_depends_on_the_split_seed_only():
    shards = [make_shard(i, [3] * 200, lang=lang) for i, lang in enumerate(["en", "fr"])]
    _, val = split_views(shards, 0.1, seed=0)
    _, again = split_views(shards, 0.1, seed=0)
    _, other = split_views(shards, 0.1, seed=1)
    assert all(np.array_equal(a.docs, b.docs) for a, b in zip(val, again))
    assert not all(np.array_equal(a.docs, b.docs) for a, b in zip(val, other)), "the split seed is ignored"
    # The training seed never reaches split_views (loader.SPLIT_SEED), so samplers with any run seed read the
    # same documents: shown end to end in tests/integration/test_loader.py.


def test_held_out_documents_of_a_shard_do_not_depend_on_the_other_shards():
    en, fr = make_shard(0, [3] * 50, lang="en"), make_shard(1, [3] * 50, lang="fr")
    _, with_en = split_views([en, fr], 0.1)
    _, fr_only = split_views([fr], 0.1)  # what loader.open_views passes with data.languages=[fr]
    assert np.array_equal(with_en[1].docs, fr_only[0].docs)


# --- determinism and resume --------------------------------------------------------------------------------

def mixed_views() -> list[ShardView]:
    """Three languages, documents both shorter and longer than the sequences used below."""
    return [whole(make_shard(i, [(5 * d + 3 * i) % 29 + 1 for d in range(n)], lang=lang))
            for i, (lang, n) in enumerate([("en", 17), ("fr", 9), ("sw", 4)])]


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, 15), batch_size=st.integers(1, 4),
       replicas=st.sampled_from([(1, 0), (2, 0), (2, 1), (3, 2)]))
def test_same_seed_same_batches_and_resume_continues_exactly(seed, k, batch_size, replicas):
    num_replicas, rank = replicas

    def sampler(s: int = seed) -> PackingSampler:
        return make_sampler(mixed_views(), raw_len=10, batch_size=batch_size, seed=s,
                            num_replicas=num_replicas, rank=rank)

    run = take(sampler(), k + 8)
    again = take(sampler(), k + 8)
    assert [step for step, _, _ in run] == list(range(k + 8))
    assert all(np.array_equal(a[1], b[1]) and a[2] == b[2] for a, b in zip(run, again))
    other = take(sampler(seed + 1), k + 8)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(run, other)), "the seed changes nothing"

    # A fresh sampler (cold epoch cache) restored from a checkpointed state continues with step k + 1.
    resumed = sampler()
    resumed.load_state_dict(json.loads(json.dumps(run[k][2])))
    for (step, tokens, state), (step2, tokens2, state2) in zip(run[k + 1 :], take(resumed, 7)):
        assert step == step2 and np.array_equal(tokens, tokens2) and state == state2


@pytest.mark.parametrize("change", ["seed", "fewer documents", "longer document", "renamed source"])
def test_state_from_other_data_or_seed_is_refused(change):
    views = mixed_views()
    state = take(make_sampler(views, raw_len=10, batch_size=2, seed=5), 3)[-1][2]
    seed = 6 if change == "seed" else 5
    if change == "fewer documents":
        views[0] = ShardView(views[0].shard, views[0].docs[:-1])
    elif change == "longer document":
        views[1] = whole(make_shard(1, (views[1].lengths + np.eye(9, dtype=np.int64)[0]).tolist(), lang="fr"))
    elif change == "renamed source":
        views[2] = whole(Shard("books", "sw", views[2].shard.tokens, views[2].shard.offsets))
    restored = make_sampler(views, raw_len=10, batch_size=2, seed=seed)
    with pytest.raises(DataError, match="other data or another seed"):
        restored.load_state_dict(state)
    assert restored.step == 0 and not restored.cursors.any(), "a refused state must leave the sampler untouched"


# --- consumers and replicas --------------------------------------------------------------------------------

@PROPERTY
@given(num_consumers=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_consumers_together_yield_the_single_consumer_stream(num_consumers, seed):
    steps = 12
    single = take(make_sampler(mixed_views(), raw_len=10, batch_size=3, seed=seed), steps)
    merged = []
    for consumer in range(num_consumers):
        owned = take(make_sampler(mixed_views(), raw_len=10, batch_size=3, seed=seed),
                     len(range(consumer, steps, num_consumers)), consumer, num_consumers)
        assert [step for step, _, _ in owned] == list(range(consumer, steps, num_consumers))
        merged += owned
    merged.sort(key=lambda item: item[0])
    assert [step for step, _, _ in merged] == list(range(steps))
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2] == b[2] for a, b in zip(single, merged))


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), batch_size=st.integers(1, 4))
def test_replicas_split_each_step_and_consume_the_stream_without_overlap(seed, batch_size):
    views = mixed_views()
    ranks = [take(make_sampler(views, raw_len=10, batch_size=batch_size, seed=seed, num_replicas=2, rank=r), 25)
             for r in (0, 1)]
    # Equal states on every rank: whichever rank writes the checkpoint, all ranks resume at the same place.
    assert all(state0 == state1 for (_, _, state0), (_, _, state1) in zip(*ranks))
    # Rows of a view, in (step, rank, row) order, must tile its stream from 0 to the final cursor: no position
    # read twice (by either rank) and none skipped. Equal rows are no proof of overlap here (a 4-document view
    # can repeat its order in the next epoch), so positions are checked, via each view's concatenation.
    interleaved = [np.concatenate([b0, b1]) for (_, b0, _), (_, b1, _) in zip(*ranks)]
    final = ranks[0][-1][2]["cursors"]
    for index, stream in rows_by_shard(interleaved).items():
        check_stream(stream, views[index].shard, index, views[index].docs)
        assert stream.size == final[index]


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), replicas=st.integers(1, 4), batch_size=st.integers(1, 4))
def test_data_parallel_global_batch_equals_the_single_process_batch(seed, replicas, batch_size):
    """R ranks of batch B see, together and in rank order, exactly the R*B sequences of one process: DDP and
    single-process training on the same global batch consume identical data."""
    views = mixed_views()
    single = take(make_sampler(views, raw_len=7, batch_size=replicas * batch_size, seed=seed), 5)
    ranks = [take(make_sampler(views, raw_len=7, batch_size=batch_size, seed=seed, num_replicas=replicas, rank=r), 5)
             for r in range(replicas)]
    for step in range(5):
        together = np.concatenate([ranks[r][step][1] for r in range(replicas)])
        np.testing.assert_array_equal(together, single[step][1])


# --- plans: per-row lengths and whole documents -------------------------------------------------------------

def mixed_planner(n: int, rng: np.random.Generator) -> RowPlan:
    """Rows of varying length, about a third of them whole documents (as a CLM child of a mixture asks)."""
    return RowPlan(rng.integers(3, 12, n), rng.random(n) < 0.35, np.zeros(n))


def plan_sampler(views: list[ShardView], seed: int, batch_size: int = 4, replicas: int = 1, rank: int = 0):
    table = sampling_table(views, 0.5, {})
    return PackingSampler(views, table.probs, planner=mixed_planner, batch_size=batch_size, separator_id=SEP,
                          seed=seed, num_replicas=replicas, rank=rank)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1))
def test_planned_rows_packed_slices_stay_a_stream_and_document_rows_are_whole_documents(seed):
    views = mixed_views()
    sampler = plan_sampler(views, seed)
    packed: dict[int, list[np.ndarray]] = defaultdict(list)
    documents: dict[int, list[int]] = defaultdict(list)
    for _, rows, _ in itertools.islice(sampler.iterate(), 30):
        assert rows.tokens.shape == (4, int(rows.lengths.max()))
        for row, length, limit, is_doc in zip(rows.tokens, rows.lengths, rows.plan.length, rows.plan.document):
            assert (row[length:] == PAD_ID).all(), "rows are right-padded with the pad id"
            body = row[:length]
            if is_doc:
                s, d, pos = decode(body)
                assert (s == s[0]).all() and (d == d[0]).all(), "a document row holds one document"
                assert np.array_equal(pos, np.arange(length)), "from its start, in order"
                assert length == min(limit, views[int(s[0])].shard.lengths[d[0]]), "cut only at the planned length"
                documents[int(s[0])].append(int(d[0]))
            else:
                assert length == limit, "packed rows are always full"
                packed[int(decode(body[body != SEP])[0][0])].append(body)
    for index, rows_of_view in packed.items():
        view = views[index]
        check_stream(np.concatenate(rows_of_view), view.shard, index, view.docs)
        assert sum(r.size for r in rows_of_view) == sampler.cursors[index]
    for index, docs in documents.items():
        n = len(views[index].docs)
        epochs = [docs[i : i + n] for i in range(0, len(docs), n)]
        assert all(len(set(e)) == len(e) for e in epochs), "each document once per epoch of the document stream"
        assert len(docs) == sampler.doc_cursors[index]


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, 10), replicas=st.sampled_from([(1, 0), (2, 1)]))
def test_planned_rows_resume_exactly(seed, k, replicas):
    views = mixed_views()
    straight = list(itertools.islice(plan_sampler(views, seed, replicas=replicas[0], rank=replicas[1]).iterate(),
                                     k + 4))
    restored = plan_sampler(views, seed, replicas=replicas[0], rank=replicas[1])
    restored.load_state_dict(json.loads(json.dumps(straight[k][2])))
    for (step, rows, _), (step2, rows2, _) in zip(straight[k + 1 :], restored.iterate()):
        assert step == step2
        np.testing.assert_array_equal(rows.tokens, rows2.tokens)
        np.testing.assert_array_equal(rows.plan.document, rows2.plan.document)
