"""Secrets Manager: a rotating secret's current and previous values.

``identity.KeyRing`` takes ``SecretVersions(...).load`` as its loader; tests give it a plain
function instead. A secret that was never rotated has no ``AWSPREVIOUS`` version.
"""

from __future__ import annotations

from botocore.config import Config

from personalize.adapters import aws

CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"
MISSING_CODES = frozenset({"ResourceNotFoundException"})


class SecretVersions:
    def __init__(self, secret_id: str, region: str | None = None, timeout_s: float = 0.5, attempts: int = 2):
        self.secret_id = secret_id
        self.region = region
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._client = None

    @property
    def client(self):
        # Tight: an instance without keys reads on the request path (a cold start), so a hung
        # Secrets Manager costs about a second, not the default minute of retries.
        if self._client is None:
            self._client = aws.uncached_client("secretsmanager", self.region, Config(
                connect_timeout=self.timeout_s, read_timeout=self.timeout_s,
                retries={"mode": "standard", "total_max_attempts": self.attempts}))
        return self._client

    def load(self) -> tuple[str, str | None]:
        current = self.client.get_secret_value(SecretId=self.secret_id, VersionStage=CURRENT)["SecretString"]
        try:
            previous = self.client.get_secret_value(SecretId=self.secret_id,
                                                    VersionStage=PREVIOUS)["SecretString"]
        except Exception as exc:
            if aws.error_code(exc) not in MISSING_CODES:
                raise
            previous = None
        return current, previous

    def rotate(self, new_value: str) -> str:
        """Make ``new_value`` current; the old current becomes AWSPREVIOUS. Returns the
        new version id."""
        return self.client.put_secret_value(SecretId=self.secret_id, SecretString=new_value)["VersionId"]
