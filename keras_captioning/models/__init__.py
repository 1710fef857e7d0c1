"""Captioning models. Importing this package registers every custom Keras object,
so ``keras.saving.load_model`` can rebuild a saved captioner."""

from keras_captioning.losses import CaptionLoss, Perplexity
from keras_captioning.models.attention_captioner import AttentionCaptioner
from keras_captioning.models.bahdanau_attention import BahdanauAttention
from keras_captioning.models.caption_ensemble import CaptionEnsemble
from keras_captioning.models.caption_model import CaptionModel
from keras_captioning.models.cnn_encoder import CNNEncoder
from keras_captioning.models.encoder_captioner import EncoderCaptioner
from keras_captioning.models.merge_captioner import MergeCaptioner, build_merge_captioner
from keras_captioning.models.rnn_decoder import RNNDecoder
from keras_captioning.models.transformer_attention import TransformerAttention
from keras_captioning.models.transformer_captioner import TransformerCaptioner
from keras_captioning.models.transformer_decoder_layer import TransformerDecoderLayer
from keras_captioning.models.transformer_encoder_layer import TransformerEncoderLayer

__all__ = [
    "AttentionCaptioner",
    "BahdanauAttention",
    "CNNEncoder",
    "CaptionEnsemble",
    "CaptionLoss",
    "CaptionModel",
    "EncoderCaptioner",
    "MergeCaptioner",
    "Perplexity",
    "RNNDecoder",
    "TransformerAttention",
    "TransformerCaptioner",
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "build_merge_captioner",
]
