"""What a model that wraps a captioner forwards to it (``self.captioner``): the special token
ids, the vocabulary size and the decoding step. ``EncoderCaptioner`` (the CNN in front of a
captioner) and SCST's ``SCSTTrainer`` (a training wrapper) declare ``(WrapsCaptioner, keras.Model)``."""


class WrapsCaptioner:
    """A mixin: the wrapped captioner's ids and ``decode_step`` (``init_decode`` is the wrapper's own)."""

    captioner = None

    @property
    def vocab_size(self):
        return self.captioner.vocab_size

    @property
    def pad_id(self):
        return self.captioner.pad_id

    @property
    def start_id(self):
        return self.captioner.start_id

    @property
    def end_id(self):
        return self.captioner.end_id

    def decode_step(self, tokens, state, context):
        return self.captioner.decode_step(tokens, state, context)
