"""The tf.distribute strategy a run trains under (``train.strategy``)."""

from __future__ import annotations

import tensorflow as tf


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` also takes a nested structure.

    Under any strategy, Keras 3's ``fit`` builds the model from a first batch that it passes
    whole to ``strategy.reduce`` (open upstream as keras-team/keras#20329). ``reduce`` is
    documented for one ``DistributedValues``; ``MirroredStrategy`` happens to pass a dict through,
    but with two or more workers this strategy tries to turn the dict into one tensor and fails
    ("unsupported type <class 'dict'>"), and a caption batch is a dict. Reducing leaf by leaf
    through the public method is what Keras expects of it. tests/test_multiworker.py fails
    without this class.
    """

    def reduce(self, reduce_op, value, axis):
        if isinstance(value, (dict, list, tuple)):
            return tf.nest.map_structure(lambda leaf: super(MultiWorkerStrategy, self).reduce(reduce_op, leaf, axis),
                                         value)
        return super().reduce(reduce_op, value, axis)


def make_strategy(name: str):
    """The strategy for ``train.strategy``: "mirrored", "multiworker", else the default one."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return MultiWorkerStrategy()
    return tf.distribute.get_strategy()
