"""`decoder_only`: one causal or prefix-LM stack. Importing the package registers the architecture."""
from seqlab_plugins.architectures.decoder_only.converter import DecoderOnlyConverter
from seqlab_plugins.architectures.decoder_only.model import DecoderOnly, DecoderOnlyConfig

__all__ = ["DecoderOnly", "DecoderOnlyConfig", "DecoderOnlyConverter"]
