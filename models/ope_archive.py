"""A candidate's off-policy estimate from the archive's logged decisions (``make evaluate
ARCHIVE=...``, the iterate target's off-policy gate).

What serving logged (``personalize.ingest.archive``): each signed-in impression carries the
decision serving signed (the list in order, each place's propensity under the serving
policy, the model, a hash of the candidate set); clicks and purchases carry the list's
``rec_id``. For each logged decision in the window:

* **shown**: the items the shopper saw at their places (the impression's ``positions``; the
  flushes of one list share its ``event_id`` and are united here), each with the logging
  policy's propensity for that item at that place (the decision's);
* **rewards**: a click, and a purchase (conversion), of that item carrying the list's rec_id;
* **the target**: the candidate ranks the candidates the replay computes for that shopper just
  before the impression (``models.replay.Logged``: the same feature code as serving, state as
  of that moment) and shows them the way serving did, with the same exploration read from the
  logged propensities (the top ``k - slots`` places as ranked, the last ``slots`` drawn
  uniformly from the ``pool`` ranked next): its probability of the logged item at that place
  is 1 or 0 in a ranked place, 1/pool in an explored one.

Estimators (``models.ope``): SNIPS and DR (a cross-fitted per item-and-place reward model),
90% intervals clustered by decision. **Not worse** means each interval's upper end reaches
the logged policy's own mean for both rewards: the data cannot say the candidate is worse.

Fidelity, measured in every report: ``ranked_places_agreeing`` is the share of the places
serving ranked (propensity 1) where the target ranks the same item; for the model serving ran
(the champion) it says how far the replay reproduces serving. The iterate target trusts an
estimate only when the champion's agreement reaches ``MIN_AGREEMENT``.

Limits, said in every report: the candidates and features are serving's view of the archive
(``models.serving_view``: events at their arrival, the shopper's row as of the second the
decision's rec_id was issued, the snapshot serving named rebuilt at its time), which still
differs from serving's where the snapshot's co-visit graph is not rebuilt exactly (aggregate's
batches per shard), where the int8 champion's tied scores are broken by a candidate order that
differs with it, and in the request's country and context item, which are not logged (the
impression's country is used, no context item). Serving's candidate set is named only by a
hash of indexes into its own snapshot, so the target ranks the replay's set: an item serving
showed that the replay's set lacks has target probability 0. Without exploration (every
propensity 1) the target's weights are 0 or 1: the estimate rests on the decisions where the
candidate would have shown the same item in the same place (``effective_rows``).
"""

from __future__ import annotations

import numpy as np

from personalize.serving import ranking

from . import ope
from .replay import Logged

REWARDS = ("click", "conversion")
MIN_AGREEMENT = 0.8  # the champion re-scored on the replay ranks serving's item at this share of places
LEVEL = 0.9


def shown_of(records) -> dict[str, dict[str, int]]:
    """event_id -> {item: position} of every impression that carries positions, its list's
    flushes united (the first position seen for an item wins)."""
    shown: dict[str, dict[str, int]] = {}
    for r in records:
        if not isinstance(r, dict) or r.get("type") != "impression":
            continue
        items, positions = r.get("items"), r.get("positions")
        if not (isinstance(items, list) and isinstance(positions, list) and len(items) == len(positions)):
            continue
        place = shown.setdefault(str(r.get("event_id")), {})
        for item, position in zip(items, positions):
            if type(item) is str and type(position) is int and position >= 1:
                place.setdefault(item, position)
    return shown


def outcomes_of(events: list[dict]) -> dict[str, dict[str, set[str]]]:
    """rec_id -> {"click": items, "conversion": items}: what followed each list. A conversion
    is the shop's backend's purchase (a browser's is a claim: the guardrail and the archive's
    orders ignore it too); nothing a client marked as automated counts."""
    out: dict[str, dict[str, set[str]]] = {}
    for e in events:
        rec_id, item = e.get("rec_id"), e.get("item_id")
        if not rec_id or not item or e.get("bot"):
            continue
        if e["type"] == "purchase" and e.get("route") != "server":
            continue
        reward = {"click": "click", "purchase": "conversion"}.get(e["type"])
        if reward is not None:
            out.setdefault(rec_id, {r: set() for r in REWARDS})[reward].add(item)
    return out


def exploration_of(propensities: list[float]) -> tuple[int, int] | None:
    """(places ranked, pool) from a decision's propensities: ones, then 1/pool each; None when
    they have another shape (not a policy this module can replay)."""
    fixed = 0
    while fixed < len(propensities) and propensities[fixed] == 1.0:
        fixed += 1
    rest = propensities[fixed:]
    if not rest:
        return fixed, 0
    pool = round(1.0 / rest[0]) if rest[0] > 0 else 0
    if pool < len(rest) or any(abs(p - 1.0 / pool) > 1e-9 for p in rest):
        return None
    return fixed, pool


def target_places(scores: np.ndarray, candidates: list[str], k: int, fixed: int,
                  pool: int) -> tuple[list[str], list[str]]:
    """The target's ranked places (``fixed`` of them) and its exploration pool, item ids."""
    ranked = ranking.top_k(scores, fixed + pool if pool else k)
    ids = [candidates[i] for i in ranked.tolist()]
    return ids[:fixed if pool else k], ids[fixed:fixed + pool] if pool else []


def slots(ranker, logged: list[Logged], shown: dict[str, dict[str, int]],
          outcomes: dict[str, dict[str, set[str]]]) -> tuple[ope.LoggedSlots | None, dict]:
    """The logged slots of ``logged`` with the target's probabilities (and its distribution
    per slot for DR), and what was left out, by reason."""
    codes: dict[str, int] = {}

    def code(item: str) -> int:
        return codes.setdefault(item, len(codes))

    rows = {"decision": [], "slot": [], "item": [], "pscore": [], "target_pscore": [],
            **{r: [] for r in REWARDS}}
    dists: list[list[tuple[int, float]]] = []
    left_out: dict[str, int] = {}
    for d, entry in enumerate(logged):
        imp, decision = entry.impression, entry.impression["decision"]
        explored = exploration_of(decision["propensities"])
        places = shown.get(imp["event_id"], {})
        if explored is None or not places or not entry.candidates:
            reason = ("propensities of an unknown policy" if explored is None else
                      "no positions" if not places else "no candidates in the replay")
            left_out[reason] = left_out.get(reason, 0) + 1
            continue
        fixed, pool = explored
        scored = getattr(entry, "scores", None)  # serving_view.Scored: scored as it was replayed
        scores = scored[ranker.key] if scored is not None else ranker.score(entry.X)
        ranked, tail = target_places(scores, entry.candidates, len(decision["items"]), fixed, pool)
        followed = outcomes.get(imp.get("rec_id", ""), {r: set() for r in REWARDS})
        for item, position in sorted(places.items(), key=lambda p: p[1]):
            slot = position - 1
            if slot >= len(decision["items"]) or decision["items"][slot] != item:
                left_out["shown item not at its decision's place"] = left_out.get(
                    "shown item not at its decision's place", 0) + 1
                continue
            if slot < len(ranked) and (not pool or slot < fixed):
                dist = [(code(ranked[slot]), 1.0)]
            elif pool and tail:
                dist = [(code(t), 1.0 / len(tail)) for t in tail]
            else:
                dist = []
            probability = sum(p for c, p in dist if c == code(item))
            rows["decision"].append(d)
            rows["slot"].append(slot)
            rows["item"].append(code(item))
            rows["pscore"].append(float(decision["propensities"][slot]))
            rows["target_pscore"].append(probability)
            for r in REWARDS:
                rows[r].append(1.0 if item in followed[r] else 0.0)
            dists.append(dist)
    if not rows["decision"]:
        return None, left_out
    logs = ope.LoggedSlots(np.array(rows["decision"]), np.array(rows["slot"]), np.array(rows["item"]),
                           {r: np.array(rows[r]) for r in REWARDS}, np.array(rows["pscore"]),
                           np.array(rows["target_pscore"]))
    width = max(1, max(len(x) for x in dists))
    items = np.zeros((len(dists), width), dtype=np.int64)
    probs = np.zeros((len(dists), width))
    for i, dist in enumerate(dists):
        for j, (c, p) in enumerate(dist):
            items[i, j], probs[i, j] = c, p
    logs.q_logged, logs.q_target = ope.cross_fitted_item_slot_model(logs, items, probs, seed=0)
    return logs, left_out


def estimate(ranker, logged: list[Logged], shown: dict[str, dict[str, int]],
             outcomes: dict[str, dict[str, set[str]]], level: float = LEVEL) -> dict:
    """The candidate's click and conversion per shown slot, SNIPS and DR, beside the logged
    policy's own; ``not_worse`` when no interval's upper end falls below the logged mean."""
    logs, left_out = slots(ranker, logged, shown, outcomes)
    base = {"candidate": ranker.key, "logged_decisions": len(logged), "left_out": left_out, "level": level,
            "same_snapshot_share": round(sum(x.same_snapshot for x in logged) / len(logged), 4) if logged else None,
            "limits": "the target ranks the replay's candidate set, not serving's (models/ope_archive.py)"}
    if logs is None or len(np.unique(logs.decision)) < 2:
        return {**base, "not_worse": None, "why": "fewer than two logged decisions with positions: nothing to say"}
    report = ope.report(logs, ("snips", "dr"), level)
    ranked = logs.pscore == 1.0
    # For the model serving ran (the champion), how faithful the replay is: the share of the
    # places serving ranked where the replay's features make it rank the same item.
    agreeing = round(float(logs.target_pscore[ranked].mean()), 4) if ranked.any() else None
    verdicts = []
    for r in REWARDS:
        mean = report[r]["logged_mean"]
        for name in ("snips", "dr"):
            high = report[r][name]["high"]
            verdicts.append(bool(np.isfinite(high)) and high >= mean)
    effective = report["weights"]["effective_rows"]
    return {**base, "report": report, "not_worse": all(verdicts), "ranked_places_agreeing": agreeing,
            "why": (f"{report['decisions']} decisions, {report['rows']} shown slots, {effective} effective rows: "
                    + ("no interval says worse than the logged policy" if all(verdicts)
                       else "an interval lies below the logged policy's mean"))}
