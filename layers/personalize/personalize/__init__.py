"""Domain code of the real-time personalization system, grouped by pipeline stage.

* ``ingest``: shopper actions in (``collect``), the Kinesis trigger's batches aggregated into
  the feature store's rows (``processor``, ``pipeline``, ``aggregation``, ``entities``);
* ``rollout``: which model a shopper gets (``flags``), what the experiment shows
  (``experiments``) and the guardrail that kills a losing challenger (``guardrail``);
* ``serving``: the item snapshot (``snapshots``, ``snapshot_job``), features, candidates and
  the ONNX ranker (``features``, ``ranking``, ``models``), one ``GET /recommendations``
  (``recommendations``), wired for the edge or the region (``wiring``), degraded answers;
* shared pieces beside them: one adapter per AWS service (``adapters``, each with an in-memory
  fake), ``codec``, ``collector``, ``keys``, ``identity``, ``regions``, ``settings``, ``telemetry``.

Layering (``.importlinter``, checked by ``make lint`` and the tests): the shared pieces import
no stage; a stage imports the shared pieces and the public modules of the stages below it
(serving > rollout > ingest), never another stage's internals (each stage's ``PUBLIC``) and
never upward. Only the adapters talk to AWS. Handlers under ``functions/`` import only a
stage's ``ENTRY_POINTS`` and the shared ``settings``, ``identity``, ``telemetry`` and ``collector``.

The regional functions receive this package as a Lambda layer, the edge build vendors it into
its bundle, and training (``models/``, never in a bundle) replays history through it.
"""
