"""Each experiment's state (running / killed / promoted / stopped, and why) in the items
table (DynamoDB), so the guardrail never touches a stopped experiment again."""

from __future__ import annotations

import json

from personalize.keys import experiment_key

from . import aws


class ExperimentStates:
    """Each experiment's state (running / killed / promoted / stopped, and why) in the items
    table, so the guardrail never touches a stopped experiment again."""

    def __init__(self, table_name: str):
        self.table_name = table_name

    def get(self, experiment: str) -> dict | None:
        pk, sk = experiment_key(experiment)
        item = aws.client("dynamodb").get_item(TableName=self.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                               ConsistentRead=True).get("Item")
        return json.loads(item["state"]["S"]) if item else None

    def put(self, experiment: str, state: dict) -> None:
        pk, sk = experiment_key(experiment)
        aws.client("dynamodb").put_item(TableName=self.table_name, Item={
            "pk": {"S": pk}, "sk": {"S": sk}, "state": {"S": json.dumps(state)}})
