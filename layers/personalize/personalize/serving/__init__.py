"""Serving: a ranked, personal list for one ``GET /recommendations``, at the edge or in the region.

``snapshot_job`` publishes the item ``snapshots`` that serving keeps in memory; ``features``
and ``ranking`` turn a shopper's row and the snapshot into candidates and their features
(the definition training replays); ``prepared`` computes the same per request from a snapshot
prepared once;
``models`` loads the ONNX ranker a flag names; ``recommendations`` answers one request;
``wiring`` builds it for the edge (from the config file baked into the bundle) or the region
(from the environment); ``degraded`` answers when AWS is unreachable; ``cloudfront`` reads
and writes Lambda@Edge events.
"""

# What other stages may import (training computes features exactly as serving does).
PUBLIC = ("snapshots", "features", "ranking", "models")
# What a handler under functions/ may import.
ENTRY_POINTS = ("recommendations", "wiring", "degraded", "cloudfront", "snapshot_job", "features")
