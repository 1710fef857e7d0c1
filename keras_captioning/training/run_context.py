"""What the loop has opened for one run, handed to its stage."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RunContext:
    """The run being trained, as the loop opened it.

    Attributes:
        cfg: the experiment config.
        run: the ``RunDirectory`` written into (a scratch folder on a non-chief worker).
        resume_from: the ``RunDirectory`` the checkpoints are read from (``run`` on the chief).
        features: the ``FeatureFolder`` (checked current for ``cfg``).
        manifest: its ``manifest.json``.
        vocab: its ``Vocabulary`` (checked against the manifest).
        feature: which stored feature the model reads ("grid" or "pooled").
        policy: the precision policy set for this run.
    """

    cfg: object
    run: object
    resume_from: object
    features: object
    manifest: dict
    vocab: object
    feature: str
    policy: str
