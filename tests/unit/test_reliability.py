"""Issue 10: nothing lost, nothing doubled. One test (at least) per problem found:

1. one bad record dropped the records before it;
2. unbounded values poisoned a row for good;
3. late events vanished from everything (tests/unit/test_aggregation.py);
4. a stock event with a user_id was ignored;
5. client dedupe remembered 64 crc32 ids per shopper;
6. nothing pinned ParallelizationFactor (tests/unit/test_template.py);
7. the sold-out list, quarantine batches and watermarks could stall or skip.
"""

import json

import pytest

from personalize import keys
from personalize.adapters.quarantine import MemoryQuarantine, SqsQuarantine
from personalize.adapters.rowstore import MemoryRowStore, ThrottledError, pack
from personalize.adapters.soldout import MemorySoldOut
from personalize.ingest import aggregation, entities, events
from personalize.ingest.aggregation import ITEMS, USERS, Change, StreamRecord
from personalize.ingest.pipeline import Ingestor
from tests import faults

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000
NOW = T0 + 30_000
SHARD = "shardId-000000000000"
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/events"


def ev(n, kind="view", user="u1", item="i1", ts=T0, **extra):
    out = {"event_id": f"e{n}", "type": kind, "item_id": item, "ts": ts, **extra}
    if user is not None:
        out["user_id"] = user
    return out


class Stream:
    def __init__(self, arn=ARN, start=10**20):
        self.seq, self.arn = start, arn

    def records(self, *evts, arrival_ms=NOW):
        out = []
        for e in evts:
            self.seq += 1
            out.append(StreamRecord.of(str(self.seq), events.parse_event(e, anonymous_ok=True),
                                       keys.source_key(self.arn, SHARD), arrival_ms, json.dumps(e).encode()))
        return out


@pytest.fixture
def store():
    return MemoryRowStore(clock=lambda: NOW / 1000)  # the ingestor's clock: TTLs as it sets them


@pytest.fixture
def quarantine():
    return MemoryQuarantine()


@pytest.fixture
def soldout():
    return MemorySoldOut()


@pytest.fixture
def ingestor(store, quarantine, soldout):
    return Ingestor(store, quarantine, clock=lambda: NOW / 1000, soldout=soldout)


def run(ingestor, records, arn=ARN):
    return ingestor.run(SHARD, records, [], NOW, arn)


def user_row(store, user_id="u1"):
    stored = store.get(USERS, keys.user_key(user_id))
    return entities.UserRow.from_obj(stored.row) if stored else None


def item_view(store, item_id="i1"):
    rows = store.query(ITEMS, f"i#{item_id}")
    return entities.merge_item_rows([entities.ItemRow.from_obj(r.row) for r in rows], NOW) if rows else None


# --- 1. poison costs only itself ---------------------------------------------------------


def invoke(store, quarantine, payloads: list[bytes]):
    """The real aggregate handler on one Kinesis batch (one shard)."""
    aggregate = faults.handler()
    aggregate.processor._ingestor = Ingestor(store, quarantine, clock=lambda: NOW / 1000)
    records = []
    for n, data in enumerate(payloads):
        records.append(faults.Record(data, "k", 10**20 + n, NOW, SHARD))
    from infra.local.lambda_events import context

    return aggregate.lambda_handler(faults.kinesis_event(records), context("aggregate"))


def test_a_record_that_breaks_the_decoder_costs_only_itself(store, quarantine, monkeypatch):
    """Any exception, not only the contract's: the records before and after it count."""
    real = events.parse_event

    def buggy(obj, *args, **kwargs):
        if obj.get("event_id") == "bug":
            raise TypeError("a bug, not a contract violation")
        return real(obj, *args, **kwargs)

    monkeypatch.setattr("personalize.ingest.pipeline.parse_event", buggy)
    payloads = [json.dumps(e).encode() for e in (ev(1), ev(2), ev(3, item="i2"), ev(4))]
    payloads[2] = json.dumps({**ev(3), "event_id": "bug"}).encode()
    assert invoke(store, quarantine, payloads) == {"batchItemFailures": []}
    assert user_row(store).totals == [3, 0, 0, 0]
    [entry] = quarantine.entries
    assert "TypeError" in entry["reason"] and entry["sequence_number"] == str(10**20 + 2)
    assert json.loads(__import__("base64").b64decode(entry["raw"]))["event_id"] == "bug"


def test_a_record_that_breaks_aggregation_is_applied_nowhere(store, quarantine, monkeypatch):
    real = entities.apply_item_event

    def buggy(row, event, key, *rest):
        if event.event_id == "e2":
            raise ZeroDivisionError("bug")
        return real(row, event, key, *rest)

    monkeypatch.setattr(entities, "apply_item_event", buggy)
    payloads = [json.dumps(e).encode() for e in (ev(1), ev(2, "click"), ev(3, item="i2"))]
    assert invoke(store, quarantine, payloads) == {"batchItemFailures": []}
    assert user_row(store).totals == [2, 0, 0, 0], "the bad click is in no row, not even the shopper's"
    assert item_view(store).totals == [1, 0, 0, 0] and item_view(store, "i2").totals == [1, 0, 0, 0]
    assert [e["reason"].split(":")[0] for e in quarantine.entries] == ["could not apply"]


def test_a_lone_surrogate_in_event_id_is_quarantined_not_fatal(store, quarantine):
    payloads = [json.dumps(ev(1)).encode(), b'{"event_id": "\\ud800", "type": "view", "user_id": "u1", '
                b'"item_id": "i1", "ts": %d}' % T0, json.dumps(ev(3)).encode()]
    assert invoke(store, quarantine, payloads) == {"batchItemFailures": []}
    assert user_row(store).totals == [2, 0, 0, 0]
    assert len(quarantine.entries) == 1


# --- 2. bounded values and rows ----------------------------------------------------------


def test_an_unbounded_quantity_is_rejected_and_the_item_keeps_counting(ingestor, store, quarantine):
    with pytest.raises(events.EventError, match="quantity"):
        events.parse_event(ev(1, "purchase", quantity=2**64 - 1))
    run(ingestor, Stream().records(ev(2, "purchase", quantity=3), ev(3, "purchase", quantity=1000)))
    assert user_row(store).totals == [0, 0, 0, 1003]  # the shopper's own row counts units
    assert item_view(store).totals == [0, 0, 0, 1]    # shared scores count shoppers (issue 19)


def test_a_row_that_cannot_be_stored_quarantines_its_records_not_the_batch(ingestor, store, quarantine):
    """A row already holding 2**64 - 1 (written before the bounds): the next purchase cannot
    be encoded. Its records go to the quarantine; the rest of the batch is written."""
    poisoned = entities.ItemRow(totals=[0, 0, 0, 2**64 - 1])
    store.put(ITEMS, Change(ITEMS, keys.item_key("bad", SHARD), "item", poisoned.to_obj(), entities.Aux().to_obj(),
                            0, [], T0), NOW // 1000 + 86_400)
    result = run(ingestor, Stream().records(ev(1, "purchase", item="bad"), ev(2, item="good"), ev(3, user="u2")))
    assert result.failed_seqs == set()
    assert item_view(store, "good").totals == [1, 0, 0, 0]
    assert user_row(store).totals == [1, 0, 0, 0], "u1's view counts; the purchase is in no row"
    assert user_row(store, "u2").totals == [1, 0, 0, 0]
    [entry] = quarantine.entries
    assert "cannot be stored" in entry["reason"] and "i#bad" in entry["reason"]


def test_an_item_row_keeps_a_bounded_number_of_countries(ingestor, store):
    codes = sorted(events.COUNTRIES)
    run(ingestor, Stream().records(*(ev(n, user=f"u{n}", country=c) for n, c in enumerate(codes))))
    view = item_view(store)
    assert len(view.countries) == entities.ITEM_COUNTRIES + 1
    assert sum(t[0] for tiles in view.countries.values() for t in tiles.values()) == len(codes), "none lost"
    assert sum(t[0] for t in view.countries[entities.OTHER_COUNTRY].values()) == len(codes) - entities.ITEM_COUNTRIES


def _longest(prefix: str, n: int) -> str:
    return (f"{prefix}{n}-" + "\U0001f600" * events.MAX_ID_CHARS)[: events.MAX_ID_CHARS]


def test_every_row_at_its_worst_case_fits_without_the_guard():
    """Rows are bounded by construction: the largest values the contract allows, in every
    slot a row has, pack under the guard's limit (so the guard never has to cut)."""
    user, item, aux = entities.UserRow(), entities.ItemRow(), entities.Aux()
    dedupe = entities.DedupeRow()
    for n in range(2_000):
        e = events.Event(f"e{n}", ["view", "click", "add_to_cart", "purchase"][n % 4], T0 - (n % 61) * 60_000,
                         _longest("u", 0), _longest("i", n % 90), category=_longest("c", n % 40),
                         country=sorted(events.COUNTRIES)[n % 240], price=999_999.99, quantity=1000)
        entities.apply_user_event(user, e, 2**64 - 1 - n)
        entities.apply_item_event(item, e, 2**64 - 1 - n)
        entities.add_covisits(item, [_longest("n", k) for k in range(n % 30)], e.ts)
    for n in range(entities.DEDUPE_IDS_PER_SHOPPER):
        aux.seen[2**64 - 1 - n] = [2**64 - 1 - n, NOW // 1000]
    for n in range(40):
        aux.advance(keys.source_key(ARN, f"shardId-{n:012d}"), 10**56 + n, NOW)
    for n in range(entities.DEDUPE_IDS):
        dedupe.seen[2**64 - 1 - n] = [2**64 - 1 - n, NOW // 1000]
    entities.prune_user(user, T0)
    entities.prune_item(item, T0)
    sizes = {"user": len(pack(user.to_obj())) + len(pack(aux.to_obj())),
             "item": len(pack(item.to_obj())) + len(pack(aux.to_obj())),
             "dedupe": len(pack(dedupe.to_obj()))}
    assert all(size < aggregation.MAX_ROW_BYTES for size in sizes.values()), sizes


def test_the_size_guard_cuts_a_row_rather_than_losing_the_batch(ingestor, store, monkeypatch):
    monkeypatch.setattr(aggregation, "MAX_ROW_BYTES", 4_000)  # the row needs ~6,000
    stream = Stream()
    run(ingestor, stream.records(*(ev(n, item=f"item-{n:03d}-" + "x" * 60, ts=T0 - n * 1000) for n in range(40))))
    row = user_row(store)
    assert row.totals == [40, 0, 0, 0], "counts kept"
    assert len(row.items) < 40, "the guard cut the item list to fit"


# --- 3. late events: see tests/unit/test_aggregation.py ------------------------------------


# --- 4. stock routed by type ----------------------------------------------------------------


def test_a_stock_event_with_a_user_id_reaches_the_item_and_the_sold_out_list(ingestor, store, soldout):
    stock = {"event_id": "s1", "type": "stock", "user_id": "warehouse-bot", "item_id": "i1", "ts": T0, "stock": 0}
    result = run(ingestor, Stream().records(stock))
    assert result.failed_seqs == set()
    assert item_view(store).stock == 0
    assert soldout.items == {"i1"}
    assert user_row(store, "warehouse-bot") is None, "a stock update is no shopper's action"


# --- anonymous events (DESIGN 3.1) ------------------------------------------------------


def test_anonymous_events_count_for_items_and_variants_only_and_once(ingestor, store):
    stream = Stream()
    anon = [ev(1, user=None, actor="ip~one"), ev(2, "purchase", user=None, quantity=2, price=5.0, rec_id="x1~a",
                                                  variant="champion", country="FR", actor="ip~one")]
    run(ingestor, stream.records(*anon))
    run(ingestor, stream.records(*anon))  # the browser's offline queue resends them
    assert item_view(store).totals == [1, 0, 0, 1]  # one anonymous shopper (issue 19: not two units)
    assert not store.tables.get(USERS), "no shopper row"
    # Outside every experiment: anonymous shoppers are not assigned a variant (flags.OUTSIDE).
    assert not store.query(ITEMS, keys.variant_pk("x1", "champion"))


# --- 5. client retries within 24 h, 64-bit keys ------------------------------------------


def test_a_retry_after_500_other_events_counts_once(ingestor, store):
    """An offline queue of 500 events flushed, then flushed again: each counts once."""
    stream = Stream()
    queue = [ev(n, "click", item=f"i{n % 7}", ts=T0 - (500 - n) * 100) for n in range(500)]
    for start in range(0, 500, 100):
        run(ingestor, stream.records(*queue[start:start + 100]))
    result = None
    for start in range(0, 500, 100):
        result = run(ingestor, stream.records(*queue[start:start + 100]))
    assert result.duplicates == 100
    assert user_row(store).totals == [0, 500, 0, 0]
    assert sum(item_view(store, f"i{k}").totals[1] for k in range(7)) == 7  # one shopper's click on each item


def test_a_retry_a_day_later_is_forgotten_but_one_within_24_hours_is_not(store, quarantine):
    stream = Stream()
    clock = {"now": NOW}
    ingestor = Ingestor(store, quarantine, clock=lambda: clock["now"] / 1000)
    ingestor.run(SHARD, stream.records(ev(1, "purchase")), [], NOW, ARN)
    later = NOW + 23 * 3_600_000
    ingestor.run(SHARD, stream.records(ev(1, "purchase"), arrival_ms=later), [], later, ARN)
    assert user_row(store).totals[3] == 1
    much_later = NOW + 25 * 3_600_000
    ingestor.run(SHARD, stream.records(ev(2), arrival_ms=much_later), [], much_later, ARN)
    assert len(entities.Aux.from_obj(store.get(USERS, keys.user_key("u1")).aux).seen) == 1, "pruned by arrival"


def test_ids_that_collide_in_crc32_both_count(ingestor, store):
    import zlib

    assert zlib.crc32(b"plumless") == zlib.crc32(b"buckeroo")
    run(ingestor, Stream().records({**ev(0), "event_id": "plumless"}, {**ev(0, "click"), "event_id": "buckeroo"}))
    assert user_row(store).totals == [1, 1, 0, 0]


# --- 7. sold-out set, quarantine batches, watermarks ---------------------------------------


def test_the_sold_out_log_is_written_only_on_transitions(store, quarantine):
    """Issue 19: every stock event above zero rewrote the sold-out set (an UpdateItem billed
    at the whole part, up to 400 units). Now only a transition writes, once per batch."""
    soldout = MemorySoldOut(limits_model=None)
    ingestor = Ingestor(store, quarantine, clock=lambda: NOW / 1000, soldout=soldout)
    levels = [50, 49, 48, 0, 0, 7, 6]
    for n, level in enumerate(levels):
        run(ingestor, Stream(start=10 + n).records({"event_id": f"s{n}", "type": "stock", "item_id": "i1",
                                                     "ts": T0 + n, "stock": level}))
    assert soldout.writes == 2, "sold out, then back in stock: two transitions, two writes"
    assert soldout.items == set()


def test_a_sold_out_log_that_cannot_be_written_holds_back_the_item_rows(store, quarantine):
    soldout = MemorySoldOut(limits_model=None)
    ingestor = Ingestor(store, quarantine, clock=lambda: NOW / 1000, soldout=soldout)
    soldout.fail = True
    stock = {"event_id": "s1", "type": "stock", "item_id": "i1", "ts": T0, "stock": 0}
    result = run(ingestor, Stream().records(stock, ev(2)))
    assert result.failed_seqs, "retried: a row written now would hide the transition from the retry"
    assert item_view(store) is None or item_view(store).stock is None
    soldout.fail = False
    result = run(ingestor, Stream().records(stock, ev(2)))
    assert result.failed_seqs == set() and soldout.items == {"i1"} and item_view(store).stock == 0


class FailOnce(MemoryRowStore):
    """Each of ``fail``'s row keys is refused (throttled) once."""

    def __init__(self, *args, fail=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fail = set(fail)

    def put(self, table, change, expires_at):
        if change.key in self.fail:
            self.fail.discard(change.key)
            raise ThrottledError(f"injected: {change.key} throttled")
        super().put(table, change, expires_at)


def retried_at_the_same_millisecond(quarantine):
    """Fault schedule 1000033 (tests.faults), reduced: attempt 1 of a batch is cut short (u2's
    row fails: items are aggregated from the records before it, so "hot" has only its
    stock-out) and retried whole (i1's row, of the first record, fails too); attempt 2, at
    the same clock millisecond, applies the rest (the restock, u2's view of i2)."""
    store = FailOnce(clock=lambda: NOW / 1000, fail={keys.user_key("u2"), keys.item_key("i1", SHARD)})
    soldout = MemorySoldOut(limits_model=None)
    ingestor = Ingestor(store, quarantine, clock=lambda: NOW / 1000, soldout=soldout)
    records = Stream().records(ev(1), {"event_id": "s1", "type": "stock", "item_id": "hot", "ts": T0, "stock": 0},
                               ev(2, user="u2", item="i2"),
                               {"event_id": "s2", "type": "stock", "item_id": "hot", "ts": T0 + 1_000, "stock": 2})
    first = run(ingestor, records)
    assert min(first.failed_seqs) == records[0].seq and soldout.items == {"hot"}
    second = run(ingestor, records)  # Lambda retries from the first record, at the same NOW
    assert second.failed_seqs == set() and item_view(store, "hot").stock == 2
    return store, soldout


def test_a_retry_at_the_same_millisecond_that_restocks_is_not_dropped_from_the_sold_out_log(quarantine):
    """The retry logged the restock under the same key as attempt 1's stock-out, which the
    log already held: dropped. The row said 2, the log "sold out" for good."""
    _, soldout = retried_at_the_same_millisecond(quarantine)
    assert soldout.items == set(), "the restock reached the row, so it must reach the log"


def test_a_retry_at_the_same_millisecond_that_touches_more_items_is_not_dropped_from_the_journal(quarantine):
    """Attempt 1's journal listed i1 and hot; the retry's (i2 as well, whose row it wrote)
    had the same key: dropped, and the snapshot job never re-read i2's row."""
    from personalize.ingest import journal

    store, _ = retried_at_the_same_millisecond(quarantine)
    touched = {item for key in store.tables[ITEMS] if key[0].startswith(journal.PK_PREFIX)
               for item in store.get(ITEMS, key).row["t"]}
    assert touched == {"hot", "i1", "i2"}


def test_quarantine_batches_are_cut_by_bytes_and_huge_records_still_fit():
    sent = []

    class Client:
        def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's names
            sent.append(sum(len(e["MessageBody"].encode()) for e in Entries))
            return {"Successful": [{"Id": e["Id"]} for e in Entries]}

    import base64

    big = base64.b64encode(b"x" * 100_000).decode()
    huge = base64.b64encode(b"y" * 1_000_000).decode()
    entries = [{"id": str(n), "reason": "r", "raw": big} for n in range(9)] + [{"id": "9", "reason": "r", "raw": huge}]
    SqsQuarantine("url", client=Client()).send(entries)
    assert len(sent) >= 5 and max(sent) <= 256 * 1024


def test_a_recreated_stream_is_not_mistaken_for_a_replay(store, quarantine):
    """Same shard id, lower sequence numbers, another stream ARN: counted."""
    ingestor = Ingestor(store, quarantine, clock=lambda: NOW / 1000)
    old = Stream(arn=ARN, start=10**30)
    ingestor.run(SHARD, old.records(ev(1)), [], NOW, ARN)
    new_arn = ARN + "-recreated"
    new = Stream(arn=new_arn, start=10**20)
    ingestor.run(SHARD, new.records(ev(2)), [], NOW, new_arn)
    assert user_row(store).totals == [2, 0, 0, 0]


def test_a_row_from_before_the_upgrade_keeps_its_shard_watermark(store, quarantine):
    """Rows written when watermarks were keyed by shard id alone: a redelivered batch from
    before the upgrade is still recognised, and the legacy entry is replaced on write."""
    ingestor = Ingestor(store, quarantine, clock=lambda: NOW / 1000)
    stream = Stream()
    [record] = stream.records(ev(1))
    legacy = entities.UserRow()
    entities.apply_user_event(legacy, record.event, record.event_key)
    store.put(USERS, Change(USERS, keys.user_key("u1"), "user", legacy.to_obj(), [{SHARD: str(record.seq)}, {}],
                            0, [], T0), NOW // 1000 + 86_400)
    ingestor.run(SHARD, [record], [], NOW, ARN)
    assert user_row(store).totals == [1, 0, 0, 0]
    ingestor.run(SHARD, stream.records(ev(2)), [], NOW, ARN)
    aux = entities.Aux.from_obj(store.get(USERS, keys.user_key("u1")).aux)
    assert list(aux.wm) == [keys.source_key(ARN, SHARD)] and user_row(store).totals == [2, 0, 0, 0]
