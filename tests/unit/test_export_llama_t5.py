"""Export to (and import from) Hugging Face Llama and T5: the exported models give our logits, and their
weights read back into ours give the same model."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("transformers")

from helpers import padded_ids, perturbed  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: E402
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

from seqlab.errors import ConfigError  # noqa: E402
from seqlab.tokenizer import BOS_ID  # noqa: E402
from seqlab_plugins.architectures.attention import RelativePositionBias, prefix_lm_mask  # noqa: E402
from seqlab_plugins.architectures.decoder_only import DecoderOnly  # noqa: E402
from seqlab_plugins.architectures.export import export_model, layout_of, state_from_hf  # noqa: E402
from seqlab_plugins.architectures.presets import DECODER_ONLY, SEQ2SEQ  # noqa: E402
from seqlab_plugins.architectures.seq2seq import Seq2Seq  # noqa: E402

TOLERANCE = 1e-4
MAX_POSITIONS = 24  # the test batches fill every position; relative buckets past the exact ones are used too
LLAMA = replace(DECODER_ONLY["llama_tiny"][0], max_positions=MAX_POSITIONS)  # 4 heads, 2 key/value heads
T5 = replace(SEQ2SEQ["t5_tiny"][0], max_positions=MAX_POSITIONS)  # shared input embeddings, separate head


def _reloaded(model: torch.nn.Module, hf: torch.nn.Module) -> torch.nn.Module:
    """A fresh model of the same config holding the Hugging Face model's weights, read back through the layout."""
    fresh = type(model)(model.cfg, vocab_size=model.head.out_features)
    fresh.init_weights(seed=1)  # derived buffers (rotary tables) are computed here, never loaded
    fresh.load_state_dict(state_from_hf(layout_of(fresh), hf.state_dict()), strict=True)
    return fresh.eval()


@pytest.mark.parametrize("tie,prefix_lm,theta", [(False, False, 1000.0), (True, True, 10000.0)],
                         ids=["untied-causal", "tied-prefix"])
def test_llama_style_decoder_exports_to_llama_with_our_causal_logits(tmp_path, tokenizer, tie, prefix_lm, theta):
    cfg = replace(LLAMA, tie_embeddings=tie, prefix_lm=prefix_lm, rope_theta=theta)
    model = perturbed(DecoderOnly(cfg, vocab_size=tokenizer.vocab_size))
    export_model(model, tokenizer, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert hf.config.num_key_value_heads == 2 < hf.config.num_attention_heads
    assert hf.config.rope_parameters["rope_theta"] == theta
    assert (hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()) == tie

    lengths = [24, 7, 1, 16]
    ids, attention_mask = padded_ids(lengths, tokenizer.vocab_size, MAX_POSITIONS)
    causal = prefix_lm_mask(torch.tensor(lengths), torch.zeros(len(lengths), dtype=torch.long), MAX_POSITIONS)
    with torch.no_grad():
        ours = model(ids, causal)
        padded = (ours - hf(input_ids=ids, attention_mask=attention_mask).logits).abs().max()
        full = (model(ids) - hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits).abs().max()
        round_trip = (_reloaded(model, hf)(ids, causal) - ours).abs().max()
    assert padded < TOLERANCE and full < TOLERANCE and round_trip < TOLERANCE
    # Llama cannot attend bidirectionally over a prefix: the README says the export is exact for causal use.
    assert ("exactly for causal use alone" in (tmp_path / "README.md").read_text()) == prefix_lm


@pytest.mark.parametrize("tie", [False, True], ids=["shared-inputs", "all-tied"])
def test_t5_style_seq2seq_exports_to_t5_with_our_logits(tmp_path, tokenizer, tie):
    cfg = replace(T5, tie_embeddings=tie, share_embeddings=not tie)
    model = perturbed(Seq2Seq(cfg, vocab_size=tokenizer.vocab_size))
    export_model(model, tokenizer, tmp_path)
    hf = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "T5ForConditionalGeneration"
    assert not hf.config.scale_decoder_outputs
    assert hf.generation_config.decoder_start_token_id == BOS_ID
    inputs = {hf.shared.weight.data_ptr(), hf.encoder.embed_tokens.weight.data_ptr(),
              hf.decoder.embed_tokens.weight.data_ptr()}
    assert len(inputs) == 1 and (hf.lm_head.weight.data_ptr() in inputs) == tie

    input_lengths = [24, 9, 1, 15]
    input_ids, attention_mask = padded_ids(input_lengths, tokenizer.vocab_size, MAX_POSITIONS)
    decoder_ids, _ = padded_ids([20, 24, 3, 11], tokenizer.vocab_size, MAX_POSITIONS, first=BOS_ID)
    with torch.no_grad():
        ours = model(input_ids, torch.tensor(input_lengths), decoder_ids)  # (B, T, V)
        theirs = hf(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_ids).logits
        round_trip = _reloaded(model, hf)(input_ids, torch.tensor(input_lengths), decoder_ids)
    assert (ours - theirs).abs().max() < TOLERANCE
    assert (round_trip - ours).abs().max() < TOLERANCE


@pytest.mark.parametrize("bidirectional", [True, False], ids=["encoder", "decoder"])
@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (8, 20), (5, 7)])
def test_relative_buckets_match_t5(bidirectional, buckets, max_distance):
    cfg = replace(T5, relative_buckets=buckets, relative_max_distance=max_distance)
    relative = torch.arange(-300, 301)
    ours = RelativePositionBias(cfg, bidirectional).bucket(relative)
    theirs = T5Attention._relative_position_bucket(relative, bidirectional=bidirectional, num_buckets=buckets,
                                                   max_distance=max_distance)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("model,field,value", [
    (lambda v: DecoderOnly(replace(LLAMA, mlp="gelu"), vocab_size=v), "mlp", "'gelu'"),
    (lambda v: DecoderOnly(replace(LLAMA, qk_norm=True), vocab_size=v), "qk_norm", "True"),
    (lambda v: Seq2Seq(replace(T5, share_embeddings=False), vocab_size=v), "share_embeddings", "False"),
    (lambda v: Seq2Seq(replace(T5, n_kv_heads=2), vocab_size=v), "n_kv_heads", "2"),
    (lambda v: Seq2Seq(replace(T5, embedding_norm=True), vocab_size=v), "embedding_norm", "True"),
], ids=["llama-gelu", "llama-qk-norm", "t5-unshared", "t5-gqa", "t5-embedding-norm"])
def test_export_rejects_components_no_layout_takes(tmp_path, tokenizer, model, field, value):
    with pytest.raises(ConfigError, match=rf"^architecture\.{field}={value}: no Hugging Face layout") as err:
        export_model(model(tokenizer.vocab_size), tokenizer, tmp_path)
    # The message says what each layout needs (GPT-2 / MBart, Llama / T5).
    assert "needs norm='layernorm'" in str(err.value) and "needs norm='rmsnorm'" in str(err.value)
    assert not (tmp_path / "config.json").exists()
