"""keras-captioning: merge (vanilla) and Bahdanau-attention image captioners in Keras 3.

Importing the package has no side effects: TensorFlow is imported only by the
sub-packages that need it (``models``, ``features``, ``training``, ...), never by
``keras_captioning.metrics`` or ``keras_captioning.config``.
"""

__version__ = "0.1.0"
