"""Export to Hugging Face transformers layouts: seq2seq -> MBart, decoder-only -> GPT-2, plus the tokenizer.

What the target layouts require (read from the transformers 5.24 sources):
- MBart is the closest encoder-decoder: pre-LN, learned positions, biases everywhere, a final LayerNorm per
  stack. It always applies `layernorm_embedding` after embeddings + positions, so only a seq2seq model with
  `embedding_norm=true` maps exactly (AlexaTM itself has no such norm). It reads positions at index + 2 (a
  fairseq legacy), so its tables have two unused leading rows. Its token embeddings are *not* forced to be
  shared: `MBartModel` builds `shared`, `encoder.embed_tokens` and `decoder.embed_tokens` as separate modules
  and ties them (and `lm_head`) only through `_tied_weights_keys`, which `get_expanded_tied_weights_keys`
  ignores when `tie_word_embeddings=False`. So our untied layout (the paper's) exports exactly with that flag;
  `model.shared` is then unused by the forward pass and holds a copy of the encoder's matrix.
- GPT-2 is pre-LN with learned positions, exact GELU (`activation_function="gelu"`) and LayerNorm eps 1e-5 as
  ours; its Conv1D layers store weights as (in, out), the transpose of nn.Linear. It is causal only: a prefix-LM
  model's bidirectional prefix cannot be expressed, so the export is exact for causal use alone.
- The tokenizer is a `tokenizers` Unigram model built from the SentencePiece proto by transformers' own
  converter (normalizer charsmap, whitespace rules, byte fallback), which encodes text to the same ids.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from sentencepiece import sentencepiece_model_pb2
from torch import nn

from seqlab.config import ArchitectureConfig
from seqlab.checkpoints import load_model
from seqlab.errors import ConfigError, SeqlabError, require
from seqlab.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig

try:
    from transformers import (
        GPT2Config, GPT2LMHeadModel, MBartConfig, MBartForConditionalGeneration, PreTrainedModel,
        PreTrainedTokenizerFast,
    )
    from transformers.convert_slow_tokenizer import SpmConverter
except ModuleNotFoundError as err:
    raise SeqlabError("exporting to Hugging Face layouts needs the transformers package: "
                      "pip install 'transformers==5.24.0'") from err

MBART_POSITION_OFFSET = 2  # MBartLearnedPositionalEmbedding reads row position + 2
Tensors = dict[str, torch.Tensor]


def _weight_bias(name: str, module: nn.Module) -> Tensors:
    return {f"{name}.weight": module.weight, f"{name}.bias": module.bias}


def _split(layer: nn.Linear, *names: str) -> Tensors:
    """A fused projection (outputs stacked as [q | k | v] or [k | v]) -> one Linear per part."""
    weights, biases = layer.weight.chunk(len(names)), layer.bias.chunk(len(names))
    return {key: value for name, w, b in zip(names, weights, biases)
            for key, value in ((f"{name}.weight", w), (f"{name}.bias", b))}


def _conv1d(name: str, layer: nn.Linear) -> Tensors:
    """GPT-2's Conv1D computes x @ W + b with W (in, out): the transpose of nn.Linear's (out, in)."""
    return {f"{name}.weight": layer.weight.t(), f"{name}.bias": layer.bias}


def mbart_config(cfg: Seq2SeqConfig, vocab_size: int) -> MBartConfig:
    require(cfg.embedding_norm, "architecture.embedding_norm", cfg.embedding_norm,
            "MBart always applies a LayerNorm to the embeddings (layernorm_embedding), so only a seq2seq model "
            "trained with architecture.embedding_norm=true exports to it exactly")
    d_ff = cfg.d_ff or 4 * cfg.d_model
    return MBartConfig(
        vocab_size=vocab_size, d_model=cfg.d_model, max_position_embeddings=cfg.max_positions,
        encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.n_heads, decoder_attention_heads=cfg.n_heads,
        encoder_ffn_dim=d_ff, decoder_ffn_dim=d_ff, activation_function="gelu", scale_embedding=False,
        # Our dropout sits where MBart's `dropout` and `attention_dropout` do; we have none after the activation.
        dropout=cfg.dropout, attention_dropout=cfg.dropout, activation_dropout=0.0, init_std=cfg.init_std,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        # Our converter starts every decoder sequence with BOS. MBart's default forced EOS id (2) is our BOS,
        # and our models were never trained to be cut off by a forced EOS: generation stays plain.
        decoder_start_token_id=BOS_ID, forced_eos_token_id=None,
        tie_word_embeddings=cfg.tie_embeddings,
    )


def mbart_state(model: Seq2Seq) -> Tensors:
    """Our parameters under MBartForConditionalGeneration's names."""
    vocab_size = model.head.out_features
    state = {"model.shared.weight": model.encoder.embed.weight, "lm_head.weight": model.head.weight,
             "final_logits_bias": torch.zeros(1, vocab_size)}
    for side, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
        prefix = f"model.{side}"
        state[f"{prefix}.embed_tokens.weight"] = stack.embed.weight
        state[f"{prefix}.embed_positions.weight"] = F.pad(stack.positions.weight, (0, 0, MBART_POSITION_OFFSET, 0))
        state |= _weight_bias(f"{prefix}.layernorm_embedding", stack.embed_norm)
        state |= _weight_bias(f"{prefix}.layer_norm", stack.final_norm)
        for i, block in enumerate(stack.blocks):
            layer = f"{prefix}.layers.{i}"
            state |= _weight_bias(f"{layer}.self_attn_layer_norm", block.attn_norm)
            state |= _split(block.attn.qkv, *(f"{layer}.self_attn.{p}_proj" for p in "qkv"))
            state |= _weight_bias(f"{layer}.self_attn.out_proj", block.attn.out)
            if block.cross is not None:
                state |= _weight_bias(f"{layer}.encoder_attn_layer_norm", block.cross_norm)
                state |= _weight_bias(f"{layer}.encoder_attn.q_proj", block.cross.q)
                state |= _split(block.cross.kv, f"{layer}.encoder_attn.k_proj", f"{layer}.encoder_attn.v_proj")
                state |= _weight_bias(f"{layer}.encoder_attn.out_proj", block.cross.out)
            state |= _weight_bias(f"{layer}.final_layer_norm", block.ff_norm)
            state |= _weight_bias(f"{layer}.fc1", block.ff.up)
            state |= _weight_bias(f"{layer}.fc2", block.ff.down)
    return state


def gpt2_config(cfg: DecoderOnlyConfig, vocab_size: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size, n_positions=cfg.max_positions, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.d_ff or 4 * cfg.d_model,
        activation_function="gelu",  # exact erf GELU as F.gelu; GPT-2's default "gelu_new" is the tanh one
        layer_norm_epsilon=1e-5,  # torch's nn.LayerNorm default, which our blocks use
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, initializer_range=cfg.init_std,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        tie_word_embeddings=cfg.tie_embeddings,
    )


def gpt2_state(model: DecoderOnly) -> Tensors:
    """Our parameters under GPT2LMHeadModel's names."""
    state = {"transformer.wte.weight": model.embed.weight, "transformer.wpe.weight": model.positions.weight,
             "lm_head.weight": model.head.weight}
    state |= _weight_bias("transformer.ln_f", model.final_norm)
    for i, block in enumerate(model.blocks):
        layer = f"transformer.h.{i}"
        state |= _weight_bias(f"{layer}.ln_1", block.attn_norm)
        state |= _conv1d(f"{layer}.attn.c_attn", block.attn.qkv)  # both stack outputs as [q | k | v]
        state |= _conv1d(f"{layer}.attn.c_proj", block.attn.out)
        state |= _weight_bias(f"{layer}.ln_2", block.ff_norm)
        state |= _conv1d(f"{layer}.mlp.c_fc", block.ff.up)
        state |= _conv1d(f"{layer}.mlp.c_proj", block.ff.down)
    return state


def to_hf_model(model: nn.Module, cfg: ArchitectureConfig) -> PreTrainedModel:
    """Our model -> the equivalent transformers model (on CPU, in eval mode), weights copied."""
    if isinstance(cfg, Seq2SeqConfig) and isinstance(model, Seq2Seq):
        hf = MBartForConditionalGeneration(mbart_config(cfg, model.head.out_features))
        state = mbart_state(model)
    elif isinstance(cfg, DecoderOnlyConfig) and isinstance(model, DecoderOnly):
        hf = GPT2LMHeadModel(gpt2_config(cfg, model.head.out_features))
        state = gpt2_state(model)
    else:
        raise ConfigError(f"architecture.name={cfg.name!r}: no Hugging Face layout to export a "
                          f"{type(model).__name__} to; exportable: seq2seq (MBart), decoder_only (GPT-2)")
    # strict: every parameter of the target is written, so a layout change in transformers fails loudly here
    with torch.no_grad():
        hf.load_state_dict({name: tensor.detach().cpu() for name, tensor in state.items()}, strict=True)
    return hf.eval()


def to_hf_tokenizer(tokenizer: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """Our SentencePiece model as a fast tokenizer that encodes text to the same ids.

    Like our Tokenizer it adds no special tokens around the text (objectives decide those). Unlike it, the
    control symbols ([CLM], [S2S], [SENT_i], ...) are special tokens, so writing "[S2S]" in the text gives that
    token's id; the text between them is encoded exactly as SentencePiece encodes each piece alone.
    """
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.path.read_bytes())
    pieces = [p.piece for p in proto.pieces]
    # legacy=True gives every chunk between special tokens its own dummy prefix, as encoding it alone would.
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, [(p.piece, p.score) for p in proto.pieces],
                                                          legacy=True)
    named = {PAD_ID, EOS_ID, BOS_ID, UNK_ID}
    control = [p.piece for i, p in enumerate(proto.pieces)
               if p.type == sentencepiece_model_pb2.ModelProto.SentencePiece.CONTROL and i not in named]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=pieces[PAD_ID], eos_token=pieces[EOS_ID], bos_token=pieces[BOS_ID],
        unk_token=pieces[UNK_ID], extra_special_tokens=control, model_max_length=model_max_length,
    )


def export_model(model: nn.Module, cfg: ArchitectureConfig, tokenizer: Tokenizer, out_dir: str | Path,
                 source: str = "an in-memory model") -> Path:
    """Write model (safetensors), config, tokenizer and a README to `out_dir`; returns `out_dir`."""
    out_dir = Path(out_dir)
    hf = to_hf_model(model, cfg)
    if tokenizer.vocab_size != hf.config.vocab_size:
        raise ConfigError(f"tokenizer.path={tokenizer.path}: vocab_size {tokenizer.vocab_size} differs from the "
                          f"model's {hf.config.vocab_size}; export with the tokenizer the model was trained with")
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out_dir)
    to_hf_tokenizer(tokenizer, hf.config.max_position_embeddings).save_pretrained(out_dir)
    (out_dir / "README.md").write_text(_readme(hf, cfg, tokenizer, source), encoding="utf-8")
    return out_dir


def export_checkpoint(checkpoint_path: str | Path, out_dir: str | Path,
                      tokenizer_path: str | Path | None = None) -> Path:
    """Export a checkpoint written by `seqlab train`; the tokenizer is the run's unless given."""
    loaded = load_model(checkpoint_path, tokenizer_path)
    return export_model(loaded.model, loaded.architecture, loaded.tokenizer, out_dir,
                        source=f"checkpoint {Path(checkpoint_path).resolve()} (step {loaded.step})")


def _readme(hf: PreTrainedModel, cfg: ArchitectureConfig, tokenizer: Tokenizer, source: str) -> str:
    auto = "AutoModelForSeq2SeqLM" if isinstance(hf, MBartForConditionalGeneration) else "AutoModelForCausalLM"
    lines = [
        f"# seqlab {cfg.name} exported as {type(hf).__name__}",
        "",
        f"Exported by seqlab from {source}. Weights are in `model.safetensors`, the model in `config.json`,",
        "the tokenizer in `tokenizer.json` (from the SentencePiece model "
        f"`{tokenizer.path.name}`, sha256 {tokenizer.sha256()}).",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {auto}",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        f"model = {auto}.from_pretrained(PATH)",
        "```",
        "",
        "The tokenizer adds no special tokens: write the mode token the model was trained with (e.g. `[S2S]`,",
        "`[CLM]`) and sentinels `[SENT_i]` into the text; they are special tokens with their original ids.",
        f"Ids: pad {PAD_ID}, eos {EOS_ID}, bos {BOS_ID}, unk {UNK_ID}.",
    ]
    if isinstance(hf, MBartForConditionalGeneration):
        lines.append(f"Decoder sequences start with BOS ({BOS_ID}), as in training (`decoder_start_token_id`).")
        if not cfg.tie_embeddings:
            lines.append("Encoder embeddings, decoder embeddings and LM head are separate matrices "
                         "(`tie_word_embeddings: false`); `model.shared` holds a copy of the encoder's.")
    if isinstance(cfg, DecoderOnlyConfig) and cfg.prefix_lm:
        lines.append("This model was trained as a prefix LM (bidirectional attention over inputs). GPT-2 attends "
                     "causally only, so this export reproduces the model exactly for causal use alone.")
    return "\n".join(lines) + "\n"
