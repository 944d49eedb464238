"""`seq2seq`: an encoder stack and a decoder stack. Importing the package registers the architecture."""
from seqlab_plugins.architectures.seq2seq.converter import Seq2SeqConverter
from seqlab_plugins.architectures.seq2seq.model import Seq2Seq, Seq2SeqConfig

__all__ = ["Seq2Seq", "Seq2SeqConfig", "Seq2SeqConverter"]
