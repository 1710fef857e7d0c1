"""The shard plan: records of each split cut into consecutive shards, numbered globally.

Which image lands in which shard depends only on the records' order and ``shard_size``,
never on the number of workers (see ``extract.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re

from keras_captioning.errors import CaptioningError
from keras_captioning.features.feature_folder import FeatureFolder

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclasses.dataclass
class _Shard:
    split: str
    index: int
    count: int
    ordinal: int  # global number over all splits: decides the worker
    records: list

    @property
    def name(self) -> str:
        return FeatureFolder.shard_name(self.split, self.index, self.count)


def _plan_shards(records, shard_size: int) -> list[_Shard]:
    by_split: dict[str, list] = {}
    for record in records:
        if not _SPLIT_NAME.match(str(record.split)):
            raise CaptioningError(f"split: {record.split!r} (image {record.image_id}) cannot name a shard file; "
                                  "use letters, digits, '_' or '.'")
        by_split.setdefault(record.split, []).append(record)
    shards, ordinal = [], 0
    for split in sorted(by_split):
        items = by_split[split]
        count = math.ceil(len(items) / shard_size)
        for index in range(count):
            shards.append(_Shard(split, index, count, ordinal, items[index * shard_size:(index + 1) * shard_size]))
            ordinal += 1
    return shards


def _plan_fingerprint(shards: list[_Shard]) -> str:
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(json.dumps([shard.name, [str(r.image_id) for r in shard.records]]).encode("utf-8"))
    return digest.hexdigest()
