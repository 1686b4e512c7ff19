"""One small adapter per AWS service, each with an in-memory fake beside it for tests."""
