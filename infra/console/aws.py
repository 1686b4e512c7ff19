"""The console's figures from a deployed stack, read with an operator's credentials (the
default chain: AWS_PROFILE, SSO, environment). Read-only unless ``admin``: CloudWatch
(``GetMetricData``: events per second, the aggregate's iterator age, recommendations per
variant, at its one-minute resolution), SQS (the quarantine's depth), S3 (the snapshot
pointer), DynamoDB (the sold-out set, the experiment counters and state) and AppConfig (the
flags document). The policy it needs is in docs/console.md."""

from __future__ import annotations

import datetime as dt

from infra.console import Sources

PERIOD_S = 60  # CloudWatch's standard resolution: the console cannot be fresher than this


class AwsSources(Sources):
    def __init__(self, env: str, admin: bool = False):
        import boto3

        from infra import ops
        from personalize.adapters.artifacts import S3Artifacts
        from personalize.adapters.soldout import DynamoSoldOut

        self.outputs = ops.stack_outputs(env)
        self.admin, self.states, self.store = ops.connect(env)
        self.allow_changes = admin
        region = self.outputs["_region"]
        self.cloudwatch = boto3.client("cloudwatch", region_name=region)
        self.sqs = boto3.client("sqs", region_name=region)
        self.artifacts = S3Artifacts(self.outputs["ArtifactsBucketName"], region)
        self.soldout = DynamoSoldOut(self.outputs["FeaturesTableName"], region)
        self._metrics: dict = {}

    def _latest(self) -> dict:
        end = dt.datetime.now(dt.UTC)
        queries = [
            ("events", "RealtimePersonalization", "EventsIn", [("service", "aggregate")], "Sum"),
            ("lag", "AWS/Lambda", "IteratorAge", [("FunctionName", self.outputs["AggregateFunctionName"])],
             "Maximum"),
            # By dimension (telemetry.record_answer); the edge's, all regions, as sent to the home region.
            ("champion_edge", "RealtimePersonalization", "Requests",
             [("service", "edge"), ("scope", "global"), ("variant", "champion")], "Sum"),
            ("challenger_edge", "RealtimePersonalization", "Requests",
             [("service", "edge"), ("scope", "global"), ("variant", "challenger")], "Sum"),
            ("champion_region", "RealtimePersonalization", "Requests",
             [("service", "recommend"), ("variant", "champion")], "Sum"),
            ("challenger_region", "RealtimePersonalization", "Requests",
             [("service", "recommend"), ("variant", "challenger")], "Sum"),
        ]
        response = self.cloudwatch.get_metric_data(
            StartTime=end - dt.timedelta(minutes=10), EndTime=end, ScanBy="TimestampDescending",
            MetricDataQueries=[{"Id": key, "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": name,
                           "Dimensions": [{"Name": k, "Value": v} for k, v in dims]},
                "Period": PERIOD_S, "Stat": stat}} for key, namespace, name, dims, stat in queries])
        return {r["Id"]: (r["Values"][0] if r["Values"] else None) for r in response["MetricDataResults"]}

    def _metric(self, key):
        if key == "events":  # one read per sample: the first figure asked refreshes them all
            self._metrics = self._latest()
        return self._metrics.get(key)

    def events_total(self):
        return None  # deployed, a rate comes straight from CloudWatch (events_per_s)

    def events_per_s(self):
        value = self._metric("events")
        return round(value / PERIOD_S, 1) if value is not None else None

    def ingest_lag_ms(self):
        return self._metrics.get("lag")

    def quarantined(self):
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.outputs["QuarantineQueueUrl"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(v) for v in attributes.values())

    def snapshot_built_at_ms(self):
        pointer = self.artifacts.pointer_if_changed(None)
        return pointer.doc.get("built_at_ms") if pointer else None

    def stockouts(self):
        return len(self.soldout.read())

    def served_share(self):
        m = self._metrics
        champion = (m.get("champion_edge") or 0) + (m.get("champion_region") or 0)
        challenger = (m.get("challenger_edge") or 0) + (m.get("challenger_region") or 0)
        return round(challenger / (champion + challenger), 4) if champion + challenger else None

    def served(self):
        return None

    def change(self, command, **kwargs):
        from infra import ops

        if not self.allow_changes:
            raise ops.ChangeRefused("this console is read-only (make console ENV=... ADMIN=1 for controls)")
        return super().change(command, **kwargs)
