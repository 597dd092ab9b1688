"""Causal streaming building blocks of the codec (see ``streaming.py`` for the state contract)."""
from codec.modules.attention import CausalLocalAttention
from codec.modules.conv import CausalConv1d, CausalConvTranspose1d, fold_weight_norm
from codec.modules.decoder import Decoder, DecoderBlock
from codec.modules.encoder import Encoder, EncoderBlock
from codec.modules.residual import ResidualUnit
from codec.modules.snake import Snake1d
from codec.modules.streaming import StepModule, StreamingModule, StreamingSequential

__all__ = [
    "CausalConv1d", "CausalConvTranspose1d", "CausalLocalAttention", "Decoder", "DecoderBlock", "Encoder",
    "EncoderBlock", "ResidualUnit", "Snake1d", "StepModule", "StreamingModule", "StreamingSequential",
    "fold_weight_norm",
]
