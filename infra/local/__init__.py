"""The embedded local stack: moto AWS built from template.yaml, the Kinesis poller, the
schedules and the HTTP front (DESIGN 3.3). Tests use the same code."""
