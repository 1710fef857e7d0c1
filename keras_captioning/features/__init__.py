"""Images -> CNN features: ``backbones`` (the encoder registry) and ``extract`` (images -> shards).

Kept import-free so ``import keras_captioning.features`` does not load TensorFlow; import
``keras_captioning.features.backbones`` or ``.extract`` where they are needed.
"""
