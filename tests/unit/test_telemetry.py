"""The edge's per-variant counts reach the home region (where the rollback alarm looks) in
one PutMetricData a minute, and survive a failed send."""

from personalize.telemetry import HomeMetrics


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class CloudWatch:
    def __init__(self):
        self.calls = []
        self.fail = False

    def put_metric_data(self, Namespace, MetricData):  # noqa: N803 - boto3's names
        if self.fail:
            raise ConnectionError("unreachable")
        self.calls.append((Namespace, {d["MetricName"]: d["Value"] for d in MetricData}))


def test_counts_are_summed_and_sent_once_a_minute_and_kept_when_a_send_fails():
    clock, cloudwatch = Clock(), CloudWatch()
    metrics = HomeMetrics("NS", "edge", lambda: cloudwatch, submit=lambda fn: fn(), clock=clock)
    for _ in range(3):
        metrics.add("Requests_challenger")
    metrics.add("Fallbacks_challenger")
    assert cloudwatch.calls == []
    cloudwatch.fail = True
    clock.now = 61
    metrics.add("Requests_champion")
    assert cloudwatch.calls == [] and metrics.failures == 1
    cloudwatch.fail = False
    clock.now = 122
    metrics.add("Requests_champion")
    assert cloudwatch.calls == [("NS", {"Requests_challenger": 3, "Fallbacks_challenger": 1,
                                        "Requests_champion": 2})]
