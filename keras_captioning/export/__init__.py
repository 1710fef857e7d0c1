"""Use a trained captioner without this package: ``saved_model`` (TensorFlow SavedModel, bytes ->
captions, greedy or beam) and ``litert`` (TFLite builtins, greedy, pixels -> tokens)."""
