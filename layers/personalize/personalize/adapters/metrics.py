"""Reading CloudWatch metrics back (``GetMetricData``): the console's rates and series on a
deployed stack. Writing them is EMF in the logs (``telemetry``); nothing here puts a metric.

One request per read, whatever the number of queries (at most 500 per request, AWS's limit),
at CloudWatch's standard one-minute resolution: a figure is never fresher than its minute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from personalize.adapters import aws

PERIOD_S = 60  # standard resolution: what EMF metrics have
MAX_QUERIES = 500  # GetMetricData's limit per request


@dataclass(frozen=True)
class MetricQuery:
    id: str  # [a-z][a-zA-Z0-9_]*: how the answer names this series
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str  # Sum, Maximum, Average...


class CloudWatchReader:
    def __init__(self, region: str | None = None, client=None):
        self.region = region
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = aws.client("cloudwatch", self.region, read_timeout=3.0, attempts=2)
        return self._client

    def series(self, queries: list[MetricQuery], minutes: int, now: dt.datetime | None = None
               ) -> dict[str, list[tuple[float, float]]]:
        """Each query's (epoch seconds, value) per minute over the last ``minutes``, oldest
        first; a minute without data is absent (CloudWatch returns no point for it)."""
        if len(queries) > MAX_QUERIES:
            raise ValueError(f"at most {MAX_QUERIES} queries per GetMetricData")
        end = (now or dt.datetime.now(dt.UTC)).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        request = {
            "StartTime": end - dt.timedelta(minutes=minutes), "EndTime": end, "ScanBy": "TimestampAscending",
            "MetricDataQueries": [{"Id": q.id, "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": q.namespace, "MetricName": q.name,
                           "Dimensions": [{"Name": k, "Value": v} for k, v in q.dimensions]},
                "Period": PERIOD_S, "Stat": q.stat}} for q in queries]}
        out: dict[str, list[tuple[float, float]]] = {q.id: [] for q in queries}
        while True:
            answer = self.client.get_metric_data(**request)
            for result in answer.get("MetricDataResults", []):
                out[result["Id"]] += [(t.timestamp(), float(v)) for t, v in zip(result["Timestamps"], result["Values"])]
            if not answer.get("NextToken"):
                break
            request["NextToken"] = answer["NextToken"]
        return {k: sorted(v) for k, v in out.items()}
