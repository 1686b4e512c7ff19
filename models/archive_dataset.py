"""Point-in-time datasets from the archive (``make dataset ARCHIVE=...``): the shop's own
traffic, as the archive function wrote it (``personalize.ingest.archive``: pseudonymous
shoppers, one JSON object a line, GZIP'd, under ``events/dt=.../hour=.../``).

The same ``Dataset`` as the Instacart bootstrap (``models.dataset``), built by the same
replay (``models.replay``: the production aggregation, snapshot and ranking-feature code,
in time order, each decision taken before the events after it are applied), with the
archive's real times:

* **orders**: the events carry no order id, so a shopper's purchases no more than
  ``ORDER_GAP_MS`` apart are one checkout; its products are the items bought, in the order
  the shopper put them in the cart (their first add-to-cart since the previous checkout);
  a purchase with no add-to-cart before it (an order placed by the shop's backend) gets one
  a millisecond before its checkout, so every order has the shape the replay's decisions are
  defined on (``order``: before its first add-to-cart; ``session``: half-way through its cart);
* **everything else** (views, clicks, impressions, carts never bought, anonymous shoppers'
  events, the shop's stock and catalogue) is replayed at its own time and takes no decision;
* **windows by time**, not per shopper: a decision whose moment falls in the last
  ``test_share`` of the archive's span tests, the ``validation_share`` before it validates,
  earlier ones train. Times are real here, so every event before a decision may shape its
  features (other shoppers' earlier purchases included: serving saw them too) and none after;
* **new shoppers**: ``NEW_SHOPPER_SHARE`` of the pseudonyms (keyed hash, as for Instacart)
  are held out entirely: their events update only their own row, none of their decisions
  trains, and their validation and test decisions are reported apart (cohort ``new``);
* **duplicates**: Firehose delivers at least once; records are read once per ``event_id``
  (an impression's flushes share their list's id and differ in items: only the first is
  replayed, which moves nothing but the shown items' impression counts). A record that does
  not parse as a contract event is skipped and counted, by reason, in the window.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from personalize.ingest.events import EventError, parse_event

from . import serving_view
from .dataset import (
    CATALOGUE_STOCK,
    FORMAT,
    NEGATIVES_KEPT,
    NEW_SHOPPER_SHARE,
    ROOT,
    SEED,
    SNAPSHOT_EVERY,
    Dataset,
    DatasetBuilder,
    assemble,
    code_digest,
    log,
    new_shoppers,
)
from .instacart import Order
from .replay import Logged, at, is_logged_decision, replay

DEFAULT_DIR = ROOT / "build" / "datasets" / "archive"
ORDER_GAP_MS = 30 * 60_000   # a shopper's purchases this close together are one checkout
MAX_TRAIN_ORDERS = 20        # a shopper's newest training orders that make decisions
TEST_SHARE = 0.2             # of the archive's span, the newest
VALIDATION_SHARE = 0.2       # of the archive's span, just before the test window
PREAMBLE_MS = 60_000         # the catalogue preamble's time before the first archived event
S3_ATTEMPTS = 3


def read_records(source: str) -> Iterator[dict]:
    """Every record of an archive: a folder (a copy of the bucket, e.g. ``aws s3 sync``: every
    ``*.gz`` under it, GZIP'd JSON lines; ``*.jsonl`` too) or ``s3://bucket[/prefix]`` (the
    ``events/`` prefix by default). ``errors/`` holds what the archive could not read: it is
    not read here."""
    if source.startswith("s3://"):
        yield from _s3_records(source)
        return
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"no archive at {source}: a folder or s3://bucket[/prefix]")
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or "errors" in path.relative_to(folder).parts:
            continue
        if path.suffix in (".gz", ".jsonl"):
            try:
                data = path.read_bytes()
                yield from _lines(gzip.decompress(data) if path.suffix == ".gz" else data)
            except (OSError, EOFError, zlib.error) as e:  # a truncated copy: say which
                raise ArchiveReadError(f"{path}: {e}") from e


def _s3_records(url: str) -> Iterator[dict]:
    from personalize.adapters import aws

    bucket, _, prefix = url[len("s3://"):].partition("/")
    s3 = aws.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix or "events/"):
        for item in page.get("Contents", []):
            for attempt in range(S3_ATTEMPTS):  # a stream cut mid-object is read again, then named
                try:
                    body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                    data = gzip.decompress(body) if item["Key"].endswith(".gz") or body[:2] == b"\x1f\x8b" else body
                    break
                except Exception as e:  # noqa: BLE001 - botocore's streaming errors, a truncated object
                    if attempt == S3_ATTEMPTS - 1:
                        raise ArchiveReadError(f"s3://{bucket}/{item['Key']}: {e}") from e
                    time.sleep(1.0 * (attempt + 1))
            yield from _lines(data)


class ArchiveReadError(RuntimeError):
    """An archive object that could not be read, named."""


def _lines(data: bytes) -> Iterator[dict]:
    for line in data.splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError:
                yield {"__unreadable__": True}


def clean(records: Iterable[dict], forgotten: frozenset[str] | set[str] = frozenset()) -> tuple[list[dict], Counter]:
    """The archive's events that parse as contract events, in time order, once each: a
    shopper's (``user_id`` or ``actor``) once per their ``event_id``, as aggregate dedupes
    them (an id one shopper sends never hides another's), the shop's item events (stock,
    catalogue: no shopper) once per identical record (a delivery repeated); none of a shopper
    the forget ledger names (``forgotten``: pseudonyms). And what was skipped, by reason."""
    seen: set = set()
    kept, skipped = [], Counter()
    for record in records:
        if type(record) is not dict or record.get("__unreadable__"):
            skipped["not a JSON object"] += 1
            continue
        try:
            event = parse_event(record, anonymous_ok=True)
        except EventError as e:
            skipped[str(e)[:80]] += 1
            continue
        who = event.user_id or event.actor
        if who is not None and who in forgotten:
            skipped["an erased shopper's (the forget ledger)"] += 1
            continue
        key = (who, event.event_id) if who is not None else json.dumps(record, sort_keys=True)
        if key in seen:
            skipped["duplicate event_id (delivered again)"] += 1
            continue
        seen.add(key)
        kept.append(record)
    kept.sort(key=lambda e: (at(e), e["event_id"]))
    return kept, skipped


def forget_ledger(source: str) -> set[str]:
    """The pseudonyms ``make forget`` ledgered (``forgotten/<pseudonym>.json`` in the archive
    bucket; in a folder copy, any ``forgotten/`` under it: copy it with ``events/``)."""
    if source.startswith("s3://"):
        from infra.forget import forgotten

        return forgotten(source[len("s3://"):].partition("/")[0])
    folder = Path(source)
    if not folder.is_dir():
        return set()
    return {f.name[:-len(".json")] for d in folder.rglob("forgotten") if d.is_dir() for f in d.glob("*.json")}


def orders_of(events: list[dict]) -> tuple[list[Order], dict[str, list[dict]], list[dict]]:
    """Orders (see the module), each order's events (its adds in ``products`` order, then its
    purchases), and every other event."""
    by_user: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        # A purchase makes an order only when the shop's backend reported it: a browser's is a
        # claim (collect), anyone's to send with any time; it is replayed as it came, no label.
        if e.get("user_id") and (e["type"] == "add_to_cart" or (e["type"] == "purchase"
                                                               and e.get("route") == "server"
                                                               and not e.get("bot"))):
            by_user[e["user_id"]].append(e)
    consumed: set[str] = set()
    orders: list[Order] = []
    order_events: dict[str, list[dict]] = {}
    for user, own in by_user.items():
        checkouts: list[list[dict]] = []
        for e in (e for e in own if e["type"] == "purchase"):
            if checkouts and at(e) - at(checkouts[-1][-1]) <= ORDER_GAP_MS:
                checkouts[-1].append(e)
            else:
                checkouts.append([e])
        adds_seen = [e for e in own if e["type"] == "add_to_cart"]  # in time order, as ``own``
        j, since = 0, None
        for number, purchases in enumerate(checkouts, 1):
            end = at(purchases[-1])
            bought = list(dict.fromkeys(p["item_id"] for p in purchases))
            first_purchase = at(purchases[0])
            # The cart as it was at checkout: its adds since the previous checkout, before this
            # one began (adds after it began are replayed as they came). One pass per shopper.
            window: dict[str, dict] = {}
            while j < len(adds_seen) and at(adds_seen[j]) < first_purchase:
                e = adds_seen[j]
                if since is None or at(e) > since:
                    window.setdefault(e["item_id"], e)
                j += 1
            adds = {item: window[item] for item in bought if item in window}
            order_id = f"{user}#{number}"
            synthetic = [{"event_id": "cart-" + hashlib.sha256(f"{order_id}\0{item}".encode()).hexdigest()[:24],
                          "type": "add_to_cart", "user_id": user, "item_id": item, "ts": first_purchase - 1,
                          "route": "server"}
                         for item in bought if item not in adds]
            cart = sorted([*adds.values(), *synthetic], key=lambda e: (at(e), e["event_id"]))
            consumed.update(e["event_id"] for e in cart)
            consumed.update(p["event_id"] for p in purchases)
            order_events[order_id] = cart + purchases
            orders.append(Order(order_id, user, number, at(cart[0]), [e["item_id"] for e in cart]))
            since = end
    orders.sort(key=lambda o: (o.placed_ms, o.order_id))
    others = [e for e in events if e["event_id"] not in consumed]
    return orders, order_events, others


class ArchiveBuilder(DatasetBuilder):
    """A dataset of the archive's traffic (see the module)."""

    def __init__(self, source: str, new_share: float = NEW_SHOPPER_SHARE, seed: int = SEED,
                 negatives_kept: float = NEGATIVES_KEPT, snapshot_every: int = SNAPSHOT_EVERY,
                 test_share: float = TEST_SHARE, validation_share: float = VALIDATION_SHARE,
                 parallel: bool = True, progress: bool = True, records: list[dict] | None = None,
                 forgotten: set[str] | None = None, max_train_orders: int = MAX_TRAIN_ORDERS):
        if not (0 < test_share < 1 and 0 < validation_share < 1 and test_share + validation_share < 1):
            raise ValueError("test_share and validation_share: each in (0, 1), together under 1")
        self.source, self.new_share, self.seed = source, new_share, seed
        self.negatives_kept, self.snapshot_every = negatives_kept, snapshot_every
        self.test_share, self.validation_share = test_share, validation_share
        self.parallel, self.progress = parallel, progress
        self.max_train_orders = max_train_orders
        self.raw = records if records is not None else list(read_records(source))
        self.forgotten = forgotten if forgotten is not None else forget_ledger(source)
        self.events, self.skipped = clean(self.raw, self.forgotten)
        if not self.events:
            raise ValueError(f"the archive at {source} holds no event that parses ({dict(self.skipped)})")
        self._content_sha = hashlib.sha256(
            "\n".join(f"{e.get('user_id') or e.get('actor') or ''}:{e['event_id']}:{e['ts']}"
                      for e in self.events).encode()).hexdigest()

    def params(self) -> dict:
        return {"new_shopper_share": self.new_share, "seed": self.seed, "negatives_kept": self.negatives_kept,
                "snapshot_every_orders": self.snapshot_every, "test_share": self.test_share,
                "validation_share": self.validation_share, "order_gap_ms": ORDER_GAP_MS,
                "max_train_orders": self.max_train_orders, "format": FORMAT, "forgotten": len(self.forgotten)}

    def id(self) -> str:
        doc = json.dumps({"content": self._content_sha, "params": self.params(), "code": code_digest()},
                         sort_keys=True)
        return "archive-" + hashlib.sha256(doc.encode()).hexdigest()[:16]

    def cutoffs(self) -> tuple[int, int]:
        """(validation_from, test_from), epoch ms."""
        first, last = at(self.events[0]), at(self.events[-1])
        span = last - first
        test_from = last - round(span * self.test_share)
        return test_from - round(span * self.validation_share), test_from

    def _prepared(self) -> dict:
        """Orders, their events, the other events with whether each feeds the item rows, the
        shoppers held out, the item vocabulary and the catalogue preamble."""
        orders, events_of_order, others = orders_of(self.events)
        users = sorted({o.user_id for o in orders} | {e["user_id"] for e in others if e.get("user_id")})
        new = new_shoppers(users, self.new_share, self.seed)
        items, preamble = self._catalogue()
        return {"orders": orders, "events_of": lambda o: events_of_order[o.order_id], "users": users, "new": new,
                "feeds": {o.order_id for o in orders if o.user_id not in new},
                "extra": [(e, e.get("user_id") not in new) for e in others], "items": items, "preamble": preamble}

    def _catalogue(self) -> tuple[list[str], list[dict]]:
        """Every item the archive names (an order's products are its purchases' items), and
        the preamble that lists each before the archive's first event (the shop published it
        to have it served or accepted); the archive's own catalogue and stock events follow."""
        item_ids: set[str] = set()
        for e in self.events:
            if e.get("item_id"):
                item_ids.add(e["item_id"])
            item_ids.update(i for i in e.get("items") or () if type(i) is str)
        items = sorted(item_ids, key=lambda p: (len(p), p))
        first_ms = at(self.events[0])
        preamble = [{"event_id": "catalogue-" + hashlib.sha256(p.encode()).hexdigest()[:32], "type": "stock",
                     "item_id": p, "stock": CATALOGUE_STOCK, "route": "server", "ts": first_ms - PREAMBLE_MS}
                    for p in items]
        return items, preamble

    def logged(self, since_ms: int | None = None, rankers: list | None = None) -> list[Logged]:
        """The decisions serving logged from ``since_ms`` (default: the test window's start),
        each with the candidates and features serving ranked them on, as the archive lets a
        replay reproduce them (``models.serving_view``; ``models.ope_archive`` scores a
        candidate on them). ``rankers``: scored as replayed, their scores kept instead of the
        features (``serving_view.Scored``: what bounds memory on a long window)."""
        since = self.cutoffs()[1] if since_ms is None else since_ms
        return serving_view.logged_decisions(
            self.events, lambda e: is_logged_decision(e) and at(e) >= since, self._catalogue()[1], rankers=rankers)

    def build(self) -> Dataset:
        started = time.monotonic()
        prep = self._prepared()
        orders, users, new, items = prep["orders"], prep["users"], prep["new"], prep["items"]
        validation_from, test_from = self.cutoffs()

        checkout = {o.order_id: at(prep["events_of"](o)[-1]) for o in orders}

        def window(ms: int) -> str:
            return "test" if ms >= test_from else "validation" if ms >= validation_from else "train"

        # An order's window is its checkout's; one whose cart began in an earlier window makes
        # no decision (its label lies past a cutoff its moment precedes).
        splits = {}
        for o in orders:
            w = window(checkout[o.order_id])
            splits[o.order_id] = w if w == window(o.placed_ms) else "history"
        # Per shopper, one decision per held-out window (their last order there: the paired
        # intervals are over shoppers, not over whoever orders most) and at most
        # ``max_train_orders`` training orders (their newest): no shopper outweighs many.
        by_user: dict[tuple[str, str], list[Order]] = defaultdict(list)
        for o in orders:
            if o.user_id in new and splits[o.order_id] == "train":
                splits[o.order_id] = "history"
            by_user[(o.user_id, splits[o.order_id])].append(o)
        for (_, split), own in by_user.items():
            keep = 1 if split in ("validation", "test") else self.max_train_orders if split == "train" else 0
            for o in sorted(own, key=lambda o: o.number)[:max(0, len(own) - keep)]:
                splits[o.order_id] = "history"
        vocab = {p: i for i, p in enumerate(items)}
        first_ms = at(self.events[0])
        if self.progress:
            log(f"archive: {len(self.events)} events, {len(orders)} orders of {len(users)} shoppers "
                f"({len(new)} held out as new shoppers); replaying through the feature code ...")
        examples = replay(orders, self.negatives_kept, seed=self.seed, progress=self.progress, parallel=self.parallel,
                          splits=splits, feeds_items=prep["feeds"], snapshot_every=self.snapshot_every,
                          preamble=prep["preamble"], events_of=prep["events_of"], extra=prep["extra"])
        groups, baskets, counts = assemble(examples, orders, splits, new, vocab)
        seconds = time.monotonic() - started
        window = {
            "id": self.id(), "format": FORMAT, "source": f"archive ({self.source})",
            "content_sha256": self._content_sha, "params": self.params(), "code_sha256": code_digest(),
            "time": "real (the archive's event times, epoch ms); windows by time across every shopper",
            "first_event_ms": first_ms, "last_event_ms": at(self.events[-1]),
            "train": f"decisions before {validation_from} (returning shoppers' order 2 onwards in the archive)",
            "validation": f"decisions from {validation_from} to before {test_from}",
            "test": f"decisions from {test_from}; sealed: read only through the test ledger",
            "validation_from_ms": validation_from, "test_from_ms": test_from,
            "orders_from": f"a shopper's purchases no more than {ORDER_GAP_MS // 60_000} minutes apart, their items "
                           "in cart order (a purchase with no add-to-cart gets one 1 ms before its checkout)",
            "item_features": "every event before a decision except held-out new shoppers' (real times: serving saw "
                             f"them too); snapshot rebuilt every {self.snapshot_every} orders of replayed traffic",
            "new_shoppers": f"{len(new)} of {len(users)} shoppers ({self.new_share:.0%}, keyed hash of the pseudonym "
                            f"with seed {self.seed}): their events update only their own row, none of their "
                            "decisions trains",
            "events": len(self.events), "skipped": dict(self.skipped), "orders": len(orders), "shoppers": len(users),
            "new_shoppers_count": len(new), "items": len(items), "decisions": counts,
            "build_seconds": round(seconds, 1),
        }
        if self.progress:
            log(f"built {window['id']} in {seconds:.0f}s: " + ", ".join(
                f"{k} {sum(v.values())}" for k, v in counts.items()))
        return Dataset(window, items, groups, baskets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a point-in-time dataset from the archive "
                                                 "(models/archive_dataset.py).")
    parser.add_argument("--archive", required=True, help="a folder (a copy of the bucket) or s3://bucket[/prefix]")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild even when the saved dataset has this id")
    args = parser.parse_args(argv)
    builder = ArchiveBuilder(args.archive)
    if args.force:
        dataset, built = builder.build(), True
        dataset.save(args.out)
    else:
        dataset, built = builder.load_or_build(args.out)
    log(f"{'built' if built else 'up to date'}: {dataset.id} in {args.out}")
    print(json.dumps({k: v for k, v in dataset.window.items()
                      if k in ("id", "events", "skipped", "orders", "shoppers", "new_shoppers_count", "decisions")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
