"""The smaller faults of issue 19 in aggregate (item 8): one bad row never costs its
batch-mates, and retries stop at a deadline inside the invocation's timeout."""

import pytest
from botocore.exceptions import ClientError

from personalize import keys
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import DeadlineError, DynamoRowStore, MemoryRowStore, RowRejectedError
from personalize.ingest import entities
from personalize.ingest.aggregation import ITEMS, USERS
from tests.unit.test_reliability import ARN, NOW, SHARD, Stream, ev


class Refusing(MemoryRowStore):
    """DynamoDB refusing some rows as invalid (ValidationException), every time."""

    def __init__(self, refused: set[str], **kw):
        super().__init__(**kw)
        self.refused = refused

    def put(self, table, change, expires_at):
        if change.key[0] in self.refused:
            raise RowRejectedError(f"ValidationException: {change.key[0]} refused")
        super().put(table, change, expires_at)


def ingestor(store, quarantine):
    from personalize.ingest.pipeline import Ingestor

    return Ingestor(store, quarantine, clock=lambda: NOW / 1000)


def item_view(store, item_id):
    rows = [entities.ItemRow.from_obj(s.row) for s in store.query(ITEMS, f"i#{item_id}") if s.row is not None]
    return entities.merge_item_rows(rows, NOW) if rows else None


def test_a_refused_shopper_row_costs_its_batch_mates_nothing():
    """Before: the refused row's records cut the batch, the items of every record after them
    were never counted, and the batch reported success: lost for good."""
    store, quarantine = Refusing({"u#bad"}, clock=lambda: NOW / 1000), MemoryQuarantine()
    records = Stream().records(ev(1, user="bad", item="a"), ev(2, user="good", item="b"),
                               ev(3, "click", user="other", item="b"))
    result = ingestor(store, quarantine).run(SHARD, records, [], NOW, ARN)
    assert result.failed_seqs == set()
    assert item_view(store, "b").totals == [1, 1, 0, 0]
    assert item_view(store, "a") is None  # the refused shopper's event is applied nowhere...
    assert [int(e["id"]) for e in quarantine.entries] == [records[0].seq]  # ...and quarantined
    assert "u#bad" in quarantine.entries[0]["reason"]


def test_a_refused_item_row_does_not_quarantine_what_the_shoppers_row_counted():
    """Before: its records were quarantined as if applied nowhere, though the shopper's row
    had counted them."""
    store, quarantine = Refusing({"i#huge"}, clock=lambda: NOW / 1000), MemoryQuarantine()
    records = Stream().records(ev(1, user="u1", item="huge"), ev(2, user="u1", item="fine"))
    result = ingestor(store, quarantine).run(SHARD, records, [], NOW, ARN)
    assert result.failed_seqs == set() and result.rows_rejected == 1 and result.quarantined == 0
    user = entities.UserRow.from_obj(store.get(USERS, keys.user_key("u1")).row)
    assert user.totals == [2, 0, 0, 0] and item_view(store, "fine").totals == [1, 0, 0, 0]
    [entry] = quarantine.entries
    assert entry["kind"] == "row" and entry["row"][0] == "i#huge" and entry["records"] == [str(records[0].seq)]


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Throttling:
    """A DynamoDB client that throttles every request, each taking its full read timeout."""

    def __init__(self, clock, seconds):
        self.clock, self.seconds, self.calls = clock, seconds, 0

    def put_item(self, **kwargs):
        self.calls += 1
        self.clock.now += self.seconds
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "PutItem")

    batch_get_item = put_item


def test_retries_stop_at_the_deadline_never_past_it():
    """Before: throttled writes were retried (6 attempts, each botocore's 4 of up to 7 s)
    with no regard for the invocation's 60 s: Lambda timed the whole batch out."""
    from personalize.adapters.rowstore import Change

    clock = Clock()
    client = Throttling(clock, seconds=6.0)  # as slow as the per-request budget allows
    store = DynamoRowStore({USERS: "features"}, client=client, request_attempts=1, connect_timeout_s=1.0,
                           read_timeout_s=5.0, monotonic=clock.monotonic, sleep=clock.sleep)
    store.deadline = 15.0
    change = Change(USERS, keys.user_key("u1"), "user", {}, [], 0, [1], 0)
    with pytest.raises(DeadlineError):
        store.put(USERS, change, 0)
    assert clock.now <= store.deadline and client.calls == 2  # the attempts that fit: 0-6 s, 6-12 s
    store.deadline = None  # no deadline: the retry budget as before
    clock.now = 0.0
    with pytest.raises(Exception) as raised:
        store.put(USERS, change, 0)
    assert not isinstance(raised.value, DeadlineError) and client.calls == 2 + store.max_attempts


def test_what_the_deadline_leaves_unwritten_is_reported_as_item_failures():
    class Late(MemoryRowStore):
        deadline = None

        def put(self, table, change, expires_at):
            if self.deadline is not None and change.table == ITEMS:
                raise DeadlineError("not attempted")
            super().put(table, change, expires_at)

    store, quarantine = Late(clock=lambda: NOW / 1000), MemoryQuarantine()
    records = Stream().records(ev(1, user="u1", item="a"), ev(2, user="u2", item="b"))
    result = ingestor(store, quarantine).run(SHARD, records, [], NOW, ARN, deadline=1.0)
    assert result.failed_seqs == {r.seq for r in records} and store.deadline is None  # restored after the batch
    again = ingestor(store, quarantine).run(SHARD, records, [], NOW, ARN)  # Lambda's retry
    assert not again.failed_seqs and item_view(store, "a").totals == [1, 0, 0, 0]
