import pytest

from personalize.ingest.events import Event, EventError, parse_event, partition_key

NOW = 1_790_000_000_000


def base(**overrides):
    event = {"event_id": "e1", "type": "click", "user_id": "u1", "item_id": "i1", "ts": NOW}
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


@pytest.mark.parametrize("obj", [
    pytest.param(base(), id="click"),
    pytest.param(base(type="stock", user_id=None, stock=0), id="stock-without-user"),
    pytest.param(base(type="impression", item_id=None, items=["a", "b"], rec_id="x~1", variant="challenger"),
                 id="impression-without-item"),
    pytest.param(base(type="impression", item_id=None, items=["a", "b"], positions=[1, 1000]),
                 id="impression-with-positions"),
    pytest.param(base(type="purchase", price=12.5, quantity=2, country="de", category="shoes"), id="purchase-full"),
    pytest.param(base(unknown_field={"nested": True}), id="unknown-fields-ignored"),
    pytest.param(base(ts=float(NOW)), id="integral-float-ts"),
])
def test_valid_events_are_accepted(obj):
    event = parse_event(obj, NOW)
    assert isinstance(event, Event)
    assert event.event_id == "e1"


@pytest.mark.parametrize("obj, message", [
    pytest.param([1, 2], "JSON object", id="not-an-object"),
    pytest.param(base(event_id=""), "event_id must be 1-64", id="empty-event-id"),
    pytest.param(base(event_id="x" * 65), "event_id must be 1-64", id="long-event-id"),
    pytest.param(base(type="like"), "type must be one of", id="unknown-type"),
    pytest.param(base(user_id=None), "user_id is required", id="click-without-user"),
    pytest.param(base(item_id=None), "item_id is required", id="click-without-item"),
    pytest.param(base(ts=None), "ts is required", id="missing-ts"),
    pytest.param(base(ts="1790000000000"), "ts must be an integer", id="string-ts"),
    pytest.param(base(ts=True), "ts must be an integer", id="boolean-ts"),
    pytest.param(base(ts=1_790_000_000), "epoch milliseconds", id="seconds-ts"),
    pytest.param(base(ts=NOW + 10 * 60_000), "in the future", id="future-ts"),
    pytest.param(base(country="DEU"), "ISO 3166", id="three-letter-country"),
    pytest.param(base(price=-1), "price must be a number from 0", id="negative-price"),
    pytest.param(base(price=float("nan")), "price must be a number from 0", id="nan-price"),
    pytest.param(base(price=float("inf")), "price must be a number from 0", id="infinite-price"),
    pytest.param(base(price=10**400), "price must be a number from 0", id="400-digit-price"),
    pytest.param(base(price=1_000_000.01), "price must be a number from 0", id="price-over-a-million"),
    pytest.param(base(price="9.99"), "price must be a number from 0", id="string-price"),
    pytest.param(base(quantity=0), "quantity must be an integer from 1 to 1000", id="zero-quantity"),
    pytest.param(base(quantity=1_000_000), "quantity must be an integer from 1 to 1000", id="million-quantity"),
    pytest.param(base(quantity=2**64 - 1), "quantity must be an integer from 1 to 1000", id="u64-quantity"),
    pytest.param(base(quantity=1e300), "quantity must be an integer from 1 to 1000", id="huge-float-quantity"),
    pytest.param(base(quantity=2.5), "quantity must be an integer", id="fractional-quantity"),
    pytest.param(base(type=["click"]), "type must be one of", id="list-type"),
    pytest.param(base(type={"a": 1}), "type must be one of", id="object-type"),
    pytest.param(base(ts=NOW - 8 * 24 * 3_600_000), "7 days in the past", id="ts-older-than-a-week"),
    pytest.param(base(ts=float("inf")), "ts must be an integer", id="infinite-ts"),
    pytest.param(base(ts=10**30), "ts must be an integer", id="absurd-ts"),
    pytest.param(base(country="ZZ"), "ISO 3166", id="unassigned-country"),
    pytest.param(base(country="é1"), "ISO 3166", id="non-letter-country"),
    pytest.param(base(user_id="u\x00"), "without control characters", id="nul-in-user"),
    pytest.param(base(item_id="a\u2028b\x9f"), "without control characters", id="c1-control-in-item"),
    pytest.param(base(event_id="e\ud800"), "without control characters", id="lone-surrogate-event-id"),
    pytest.param(base(category="\udfff"), "without control characters", id="lone-surrogate-category"),
    pytest.param(base(rec_id=["x"]), "rec_id must be a string", id="list-rec-id"),
    pytest.param(base(type="stock", user_id=None, stock=10**9 + 1), "stock must be an integer from 0",
                 id="stock-over-a-billion"),
    pytest.param(base(type="stock", user_id=None), "stock is required", id="stock-without-level"),
    pytest.param(base(type="stock", user_id=None, stock=-3), "stock must be an integer from 0", id="negative-stock"),
    pytest.param(base(type="impression", item_id=None), "items must be a non-empty list", id="impression-no-items"),
    pytest.param(base(type="impression", items=[""]), "items must be 1-128", id="impression-empty-id"),
    pytest.param(base(type="impression", items=[7]), "items must be a string", id="impression-numeric-id"),
    pytest.param(base(user_id=42), "user_id must be a string", id="numeric-user"),
    *[pytest.param(base(type="impression", items=["a", "b"], positions=positions), "positions must be a list of "
                   "distinct integers from 1 to 1000, one for each of items", id=f"impression-positions-{name}")
      for name, positions in [("too-few", [1]), ("too-many", [1, 2, 3]), ("zero", [0, 1]), ("over", [1, 1001]),
                              ("boolean", [True, 2]), ("float", [1.0, 2]), ("string", ["1", "2"]),
                              ("null", [None, 1]), ("not-a-list", {"0": 1}), ("repeated", [7, 7])]],
])
def test_invalid_events_say_which_rule(obj, message):
    with pytest.raises(EventError, match=message):
        parse_event(obj, NOW)


def test_an_impression_keeps_the_place_of_each_item_it_showed():
    event = parse_event(base(type="impression", item_id=None, items=["a", "b"], positions=[3, 7]), NOW)
    assert event.to_dict()["items"] == ["a", "b"] and event.to_dict()["positions"] == [3, 7]
    assert parse_event(event.to_dict(), NOW).positions == (3, 7)  # as aggregate reads it off the stream
    assert "positions" not in parse_event(base(type="impression", items=["a"]), NOW).to_dict()


def test_country_is_normalised_to_upper_case():
    assert parse_event(base(country="fr"), NOW).country == "FR"


def test_partition_key_is_the_shopper_or_the_item_for_stock():
    assert partition_key(parse_event(base(), NOW)) == "u1"
    assert partition_key(parse_event(base(type="stock", user_id=None, stock=3), NOW)) == "i1"


def test_round_trip_drops_unknown_fields_and_defaults():
    event = parse_event(base(unknown=1, quantity=1), NOW)
    assert event.to_dict() == {"event_id": "e1", "type": "click", "ts": NOW, "user_id": "u1", "item_id": "i1"}


@pytest.mark.parametrize("obj", [
    pytest.param(base(quantity=1000, price=1_000_000), id="upper-bounds"),
    pytest.param(base(type="stock", user_id=None, stock=10**9), id="billion-stock"),
    pytest.param(base(ts=NOW - 7 * 24 * 3_600_000 + 1), id="just-under-a-week-old"),
    pytest.param(base(user_id="Zoë 🛒 ünïcode"), id="non-ascii-user"),
])
def test_values_at_the_bounds_are_accepted(obj):
    parse_event(obj, NOW)


def test_anonymous_events_only_where_allowed():
    """The public route writes anonymous shoppers' events without user_id; the server route
    and a direct parse still require it."""
    with pytest.raises(EventError, match="user_id is required"):
        parse_event(base(user_id=None), NOW)
    event = parse_event(base(user_id=None), NOW, anonymous_ok=True)
    assert event.user_id is None
    assert partition_key(event) == "e1"  # by event id: see test_partition_keys_spread_a_viral_item


def test_partition_keys_spread_a_viral_item_and_keep_what_must_stay_in_order():
    """Issue 19: anonymous events were keyed by item (this test failed: the key was "i1"), so
    a viral item's whole flash sale landed on one shard (1,000 records/s). By event id they
    spread, and a resend (same id) still reaches the original's shard and dedupe row."""
    anonymous = [parse_event(base(event_id=f"e{n}", user_id=None), NOW, anonymous_ok=True) for n in range(100)]
    assert len({partition_key(e) for e in anonymous}) == 100
    resend = parse_event(base(event_id="e7", user_id=None, ts=NOW - 5), NOW, anonymous_ok=True)
    assert partition_key(resend) == partition_key(anonymous[7])
    assert partition_key(parse_event(base(), NOW)) == "u1"  # a shopper's events, in order
    stock = parse_event(base(type="stock", user_id="backend", stock=3), NOW)
    assert partition_key(stock) == "i1"  # one shard decides an item's sold-out transitions
    listing = parse_event(base(type="catalogue", user_id=None, listed=False), NOW)
    assert partition_key(listing) == "i1"


@pytest.mark.parametrize("obj, message", [
    pytest.param(base(type="catalogue", user_id=None), "listed", id="no-listed"),
    pytest.param(base(type="catalogue", user_id=None, listed="yes"), "listed", id="listed-not-bool"),
    pytest.param(base(type="catalogue", user_id=None, listed=True, department="x" * 129), "department",
                 id="long-department"),
    pytest.param(base(type="catalogue", user_id=None, listed=True, name="\x00"), "name", id="control-name"),
    pytest.param(base(type="catalogue", user_id=None, listed=True, item_id=None), "item_id", id="no-item"),
])
def test_catalogue_events_are_checked(obj, message):
    with pytest.raises(EventError, match=message):
        parse_event(obj, NOW)


def test_a_catalogue_event_carries_the_shops_details():
    event = parse_event(base(type="catalogue", user_id=None, listed=True, department="dairy", name="<b>Milk</b>",
                             price=1.5), NOW)
    assert (event.listed, event.department, event.name, event.price) == (True, "dairy", "<b>Milk</b>", 1.5)
    assert parse_event(event.to_dict(), NOW).to_dict() == event.to_dict()  # as the stream carries it
    assert parse_event(base(route="server"), NOW).from_server
    assert parse_event(base(route="admin"), NOW).route is None  # only the two routes' names
