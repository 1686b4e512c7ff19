"""One identity, one shopper's worth (issue 19, items 3 and 7): what one identity can do to
the shared scores (item trending, popularity, co-visitation; experiment counters), through
the real batch pipeline with the in-memory store."""

import pytest

from personalize import keys
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import MemoryRowStore
from personalize.codec import pack
from personalize.ingest import entities
from personalize.ingest.aggregation import ITEMS, USERS, StreamRecord
from personalize.ingest.events import parse_event
from personalize.ingest.pipeline import Ingestor
from personalize.serving import snapshots

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000
NOW = T0 + 30_000
SHARD = "shardId-000000000000"
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/events"


class Stream:
    def __init__(self):
        self.seq = 10**20

    def records(self, events, arrival_ms=NOW):
        out = []
        for e in events:
            self.seq += 1
            out.append(StreamRecord.of(str(self.seq), parse_event(e, anonymous_ok=True), keys.source_key(ARN, SHARD),
                                       arrival_ms))
        return out


@pytest.fixture
def clock():
    return {"now": NOW}


@pytest.fixture
def store(clock):
    return MemoryRowStore(clock=lambda: clock["now"] / 1000)


@pytest.fixture
def ingest(store, clock):
    ingestor = Ingestor(store, MemoryQuarantine(), clock=lambda: clock["now"] / 1000)
    stream = Stream()

    def run(events, arrival_ms=None, batch=500):
        arrival_ms = arrival_ms or clock["now"]
        clock["now"] = max(clock["now"], arrival_ms)
        for start in range(0, len(events), batch):
            records = stream.records(events[start:start + batch], arrival_ms)
            result = ingestor.run(SHARD, records, [], clock["now"], ARN)
            assert not result.failed_seqs
    return run


def ev(n, kind="purchase", item="tail-1", ts=T0, **more):
    return {"event_id": f"e{n}", "type": kind, "item_id": item, "ts": ts, **more}


def item_view(store, item_id="tail-1", now_ms=NOW):
    rows = [entities.ItemRow.from_obj(s.row) for s in store.query(ITEMS, f"i#{item_id}") if s.row is not None]
    return entities.merge_item_rows(rows, now_ms) if rows else None


def trending(store, item_id="tail-1", now_ms=NOW):
    snap = snapshots.build({item_id: item_view(store, item_id, now_ms)}, now_ms, "t")
    return float(snap.matrix[0, snapshots.ITEM_COLUMNS.index("item_trending_log")])


def test_a_thousand_units_bought_a_thousand_times_move_an_item_as_one_purchase(store, ingest, clock):
    """Before: one purchase of 1,000 units counted 1,000 purchases (popularity x 8,000)."""
    ingest([ev(n, user_id="whale", quantity=1000, price=1.0) for n in range(1000)])
    view = item_view(store)
    assert view.totals == [0, 0, 0, 1]
    assert view.popularity == pytest.approx(entities.INTERACTION_WEIGHTS[3], rel=1e-3)
    assert sum(t[3] for t in view.tiles.values()) == 1
    # The shopper's own row still knows what they bought.
    user = entities.UserRow.from_obj(store.get(USERS, keys.user_key("whale")).row)
    assert user.totals[3] == 1_000_000


def test_the_trending_gain_of_one_client_is_that_of_one_unit_bought_once(store, ingest):
    ingest([ev(0, user_id="honest", item="tail-2")])
    honest = trending(store, "tail-2")
    ingest([ev(n, user_id="flood", quantity=1000) for n in range(1, 1001)])
    assert trending(store) == pytest.approx(honest) and honest > 0


def test_a_client_cannot_open_new_windows_with_its_event_times(store, ingest):
    """The credit window is the record's arrival (server time), never the client's ``ts``."""
    ingest([ev(n, user_id="time-traveller", ts=T0 - n * 3_600_000) for n in range(150)])  # a week of hours
    assert item_view(store).totals == [0, 0, 0, 1]


def test_one_identity_moves_an_item_again_in_the_next_window(store, ingest, clock):
    ingest([ev(1, user_id="regular")])
    ingest([ev(2, user_id="regular", ts=T0 + entities.CREDIT_WINDOW_MS)], arrival_ms=NOW + entities.CREDIT_WINDOW_MS)
    assert item_view(store, now_ms=NOW + entities.CREDIT_WINDOW_MS).totals == [0, 0, 0, 2]


def test_an_anonymous_flood_from_one_address_is_one_shopper_and_bots_are_none(store, ingest):
    ingest([ev(n, "click", actor="ip~one-address") for n in range(500)])
    ingest([ev(n, "click", actor="ip~crawler", bot=True) for n in range(500, 1000)])
    ingest([ev(n, "click", actor=f"ip~fan-{n}") for n in range(1000, 1100)])
    ingest([ev(n, "click") for n in range(1100, 1200)])  # no identity at all: nothing shared
    assert item_view(store).totals == [0, 1 + 100, 0, 0]


def test_co_visits_move_once_per_identity_however_often_it_alternates(store, ingest):
    events = [ev(n, "view", item="a" if n % 2 else "b", user_id="pingpong", ts=T0 + n) for n in range(400)]
    ingest(events)
    # One shopper went from b to a (recorded on the later item; snapshots serve it both ways).
    assert item_view(store, "a").neighbours == {"b": pytest.approx(1.0, rel=1e-3)}
    assert item_view(store, "b").neighbours == {}


def test_an_identity_moves_at_most_its_cap_of_items_a_window(store, ingest):
    cap = entities.MAX_ITEM_CREDITS
    ingest([ev(n, "view", item=f"sku-{n}", user_id="scraper", ts=T0 + n) for n in range(cap + 50)], batch=1000)
    counted = sum(1 for n in range(cap + 50) if item_view(store, f"sku-{n}"))
    assert counted == cap
    aux = entities.Aux.from_obj(store.get(USERS, keys.user_key("scraper")).aux)
    assert len(aux.credits.items) == cap and len(pack(aux.to_obj())) < 120_000


def test_a_viral_item_row_stays_small_however_many_shoppers(store, ingest):
    """No identity set lives in the item's row (the credits live with each identity): its
    size does not grow with its shoppers."""
    ingest([ev(n, "view", item="viral", actor=f"ip~{n}", ts=T0 + n) for n in range(5000)], batch=1000)
    size_5k = sum(len(pack(s.row)) for s in store.query(ITEMS, "i#viral"))
    ingest([ev(n, "view", item="viral", actor=f"ip~{n}", ts=T0 + n) for n in range(5000, 20_000)], batch=1000)
    size_20k = sum(len(pack(s.row)) for s in store.query(ITEMS, "i#viral"))
    assert item_view(store, "viral").totals[0] == 20_000
    assert size_20k == size_5k < 2_000


def test_an_anonymous_identity_lasts_one_credit_window():
    from personalize.ingest import actors

    assert actors.ACTOR_WINDOW_MS == entities.CREDIT_WINDOW_MS


def test_credits_expire_with_their_windows(store, ingest, clock):
    ingest([ev(1, user_id="u")])
    later = NOW + 3 * entities.CREDIT_WINDOW_MS
    ingest([ev(2, "view", item="other", user_id="u", ts=later - 1000)], arrival_ms=later)
    aux = entities.Aux.from_obj(store.get(USERS, keys.user_key("u")).aux)
    assert len(aux.credits.items) == 1  # the first window's credit is gone


# --- item 7: the guardrail's unit is the shopper --------------------------------------------------


def attributed(n, kind, user="mallory", rec="exp@200~x", variant="challenger", **more):
    base = {"event_id": f"a{n}", "type": kind, "user_id": user, "ts": T0, "rec_id": rec, "variant": variant, **more}
    if kind == "impression":
        base["items"] = ["sku-1"]
    else:
        base["item_id"] = "sku-1"
    return base


def variant_counts(store, experiment="exp@200", variant="challenger"):
    rows = [entities.VariantRow.from_obj(s.row) for s in store.query(ITEMS, keys.variant_pk(experiment, variant))]
    return [sum(r.counts[i] for r in rows) for i in range(4)], sum(r.revenue for r in rows)


def test_repeated_impressions_clicks_and_replays_of_one_shopper_are_one_shoppers_evidence(store, ingest, clock):
    """Before: each served list (a new rec_id per GET) counted an impression, so one account
    could bury a variant's conversion under 10,000 impressions; and a rec_id replayed after the
    24 h dedupe counted again."""
    ingest([attributed(n, "impression", rec=f"exp@200~{n}") for n in range(3000)])
    ingest([attributed(n, "click", rec=f"exp@200~{n}") for n in range(3000, 6000)])
    ingest([attributed(9, "impression", rec="exp@200~9")], arrival_ms=NOW + 3 * entities.DAY_MS)  # replay
    assert variant_counts(store)[0] == [1, 1, 0, 0]


def test_each_shopper_counts_once_per_counter_and_revenue_sums_purchases(store, ingest):
    ingest([attributed(1, "impression", user="a"), attributed(2, "purchase", user="a", price=10.0, quantity=2),
            attributed(3, "purchase", user="a", price=5.0), attributed(4, "click", user="b")])
    assert variant_counts(store) == ([2, 1, 0, 1], 25.0)  # b's click exposed b too


def test_each_ramp_step_counts_its_shoppers_apart(store, ingest):
    ingest([attributed(1, "impression", rec="exp@200~1"), attributed(2, "impression", rec="exp@1000~2")])
    assert variant_counts(store, "exp@200")[0][0] == 1 and variant_counts(store, "exp@1000")[0][0] == 1


def test_a_bots_attributed_events_count_for_no_variant(store, ingest):
    ingest([attributed(1, "impression", bot=True), attributed(2, "click", bot=True)])
    assert variant_counts(store) == ([0, 0, 0, 0], 0)


def test_a_shopper_active_every_day_of_a_long_step_counts_once(store, ingest, clock):
    """Before: a credit's day was refreshed only by the event it was granted to, so a shopper
    seen every day was forgotten 30 days after the first exposure and counted again (found by
    the attacker review of 2026-12-05: [1, 1, 0, 0] on day 0, [2, 2, 0, 0] on day 32)."""
    for day in range(0, 64, 2):
        at = NOW + day * entities.DAY_MS
        ingest([attributed(2 * day, "impression", rec=f"exp@200~{day}", ts=at),
                attributed(2 * day + 1, "click", rec=f"exp@200~{day}", ts=at)], arrival_ms=at)
    assert variant_counts(store)[0] == [1, 1, 0, 0]


def test_a_shopper_gone_for_longer_than_the_credit_ttl_is_forgotten(store, ingest, clock):
    """The other side of the bound: an identity's credits are not kept for ever."""
    ingest([attributed(1, "impression")])
    later = NOW + entities.EXPERIMENT_CREDIT_TTL_MS + 2 * entities.DAY_MS
    ingest([attributed(2, "impression", rec="exp@200~2", ts=later)], arrival_ms=later)
    assert variant_counts(store)[0] == [2, 0, 0, 0]


def test_exposure_and_conversion_of_a_long_step_expire_together(store, ingest, clock):
    """The on-call review of 2026-12-05: with each counter kept alive only by its own events, a
    shopper seen daily who bought on day 1 and day 40 counted exposed 1, bought 2."""
    for day in range(0, 42):
        at = NOW + day * entities.DAY_MS
        events = [attributed(3 * day, "impression", rec=f"exp@200~{day}", ts=at)]
        if day in (1, 40):
            events.append(attributed(3 * day + 1, "purchase", rec=f"exp@200~{day}", ts=at, price=1.0))
        ingest(events, arrival_ms=at)
    assert variant_counts(store)[0] == [1, 0, 0, 1]
