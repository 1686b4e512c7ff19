"""CloudWatch Logs groups a stack cannot declare: Lambda@Edge writes to
``/aws/lambda/us-east-1.<function>`` in every region where it runs, created on first write
without a retention (kept forever). ``LogGroups.keep`` creates the group ahead of the first
line and sets its retention; ``delete`` removes it (teardown)."""

from __future__ import annotations

from collections.abc import Callable

from personalize.adapters import aws


def edge_log_group(function_name: str) -> str:
    return f"/aws/lambda/us-east-1.{function_name}"


class LogGroups:
    def __init__(self, client_for: Callable[[str], object] | None = None):
        self.client_for = client_for or (lambda region: aws.client("logs", region))

    def keep(self, group: str, region: str, days: int) -> str:
        """Create ``group`` in ``region`` if absent and set its retention: "set", "created"."""
        logs = self.client_for(region)
        created = "set"
        try:
            logs.create_log_group(logGroupName=group)
            created = "created"
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        logs.put_retention_policy(logGroupName=group, retentionInDays=days)
        return created

    def delete(self, group: str, region: str) -> bool:
        """True when it was there."""
        logs = self.client_for(region)
        try:
            logs.delete_log_group(logGroupName=group)
        except logs.exceptions.ResourceNotFoundException:
            return False
        return True
