"""Ingest: shopper actions in, the feature store's rows out.

``collect`` (``POST /events``, ``POST /server/events``) decides who may say what and puts
events on the stream; ``processor`` is the Kinesis trigger's batch processor. ``pipeline``
runs a batch: ``aggregation`` (a batch in, the changed rows out, pure), ``writes`` (durable
writes, the quarantine) and ``progress`` (what the trigger attempted, for replays).
``events`` is the event contract (DESIGN 3.1), ``windows`` the minute tiles, ``entities``
the rows and how one event changes them. ``catalogue`` is what the shop publishes (its
membership, checked by collect and aggregate), ``journal`` what each batch tells readers
that must not scan (the snapshot job, serving's sold-out path), ``coalesce`` the stock
updates collect lets through.
"""

# What other stages may import: the event contract, the rows and how they count (training
# replays history through ``aggregation``). The rest is this stage's own.
PUBLIC = ("events", "windows", "entities", "aggregation", "catalogue", "journal")
# What a handler under functions/ may import.
ENTRY_POINTS = ("collect", "processor", "archive")
