"""GET /recommendations through the real edge handler (CloudFront origin-request events)
and the regional handler, under moto, after real events went through the pipeline."""

import contextlib
import copy
import json

import pytest

from infra.local import template
from infra.local.lambda_events import context, http_api_event, response_json
from infra.local.stack import cloudfront_event
from personalize import identity
from personalize.adapters.userstore import MemoryUserStore
from personalize.serving.recommendations import decode_candidates, decode_vectors
from tests.conftest import Pipeline, module_stack, now_ms, use_stack

# The champion the flags deploy (``make train`` writes it there).
CHAMPION = json.loads((template.ROOT / "infra" / "flags" / "initial.json").read_text())["champion_model"]["default"]


class Serving(Pipeline):
    def __init__(self, stack, tmp_path):
        super().__init__(stack)
        self.snapshot = self._load("snapshot")
        self._load_serving(tmp_path)

    def _load_serving(self, tmp_path) -> None:
        config = tmp_path / "edge_config.json"
        config.write_text(self.stack.serving_config().to_json())
        self.edge = self._load("edge")
        self.edge.CONFIG_PATH = config
        self.edge.MODELS_DIR = template.ROOT / "models"
        self.edge.FALLBACK_PATH = tmp_path / "fallback_items.json"  # none baked: an outage answers []
        self.edge.COLD_START_WAIT_S = 60.0  # moto in-process is slow to cold-start; outages are tested apart
        self.recommend_app = self._load("recommend")

    def with_new_serving(self, tmp_path) -> "Serving":
        """This shop with a new edge and regional function (new containers: cold, nothing
        cached), for a test that breaks them on purpose; the pipeline is the same."""
        other = copy.copy(self)
        other._load_serving(tmp_path)
        return other

    @staticmethod
    def _load(name):
        from infra.local import handlers

        return handlers.load(name)

    def publish_snapshot(self):
        return self.snapshot.lambda_handler({}, context("snapshot"))

    def cookie(self, user_id):
        return "rt_uid=" + identity.cookie_value(user_id, self.stack.signing_key)

    def edge_get(self, query="k=10", cookie=None, country="FR", method="GET", uri="/recommendations"):
        from urllib.parse import parse_qsl

        headers = {"cloudfront-viewer-country": country}
        if cookie:
            headers["cookie"] = cookie
        event = cloudfront_event(method, uri, dict(parse_qsl(query)), headers)
        return self.edge.lambda_handler(event, context("edge"))

    def get(self, query="k=10", cookie=None, country="FR"):
        answer = self.edge_get(query, cookie, country)
        return int(answer["status"]), json.loads(answer["body"]), answer["headers"]

    def recommender(self):
        return self.edge.recommender()

    def refresh(self):
        """Let the serving instance pick up the newest snapshot and sold-out list now."""
        r = self.recommender()
        r.snapshot.refresh_now()
        r.soldout.refresh_now()


@contextlib.contextmanager
def loaded_shop(tmp_path_factory):
    """A module's shop (``module_stack``): the stack, its functions, the shop loaded and its
    snapshot served."""
    with module_stack() as stack:
        serving = Serving(stack, tmp_path_factory.mktemp("shop"))
        load_shop(serving, now_ms())
        serving.refresh()
        yield serving


@pytest.fixture(scope="module")
def _shop(tmp_path_factory):
    with loaded_shop(tmp_path_factory) as shop:
        yield shop


@pytest.fixture
def shop(_shop, monkeypatch) -> Serving:
    """One loaded shop for the module's tests (``module_stack``): each its own shoppers, and
    what a test changes on the serving objects changed through its ``monkeypatch``."""
    use_stack(_shop.stack, monkeypatch)
    return _shop


def catalogue_events(ts, n_items=400, shoppers=60):
    """A shop: popular items, a FR burst on sku-7, and a cluster sku-900..904 that shoppers
    view together (co-visitation)."""
    events, n = [], 0
    for user in range(shoppers):
        for k in range(8):
            n += 1
            events.append({"event_id": f"c{n}", "type": "view", "user_id": f"bg{user}",
                           "item_id": f"sku-{(user * 7 + k * 13) % n_items}", "ts": ts, "country": "US"})
        for j in range(900, 905):
            n += 1
            events.append({"event_id": f"c{n}", "type": "view", "user_id": f"bg{user}", "item_id": f"sku-{j}",
                           "ts": ts + j, "country": "DE"})
    for k in range(40):
        n += 1
        events.append({"event_id": f"c{n}", "type": "click", "user_id": f"fr{k}", "item_id": "sku-7", "ts": ts,
                       "country": "FR"})
    return events


def load_shop(serving, ts):
    events = catalogue_events(ts)
    for start in range(0, len(events), 500):
        status, answer = serving.post({"events": events[start:start + 500]})
        assert answer["accepted"] == len(events[start:start + 500])
    serving.drain()
    serving.publish_snapshot()


def items(body):
    return [i["item_id"] for i in body["items"]]


def test_anonymous_shopper_gets_country_trending_without_caching(shop):
    status, body, headers = shop.get("k=5", country="FR")
    assert status == 200
    assert body["user_id"] is None and body["fallback"] is True and body["fallback_reason"] == "anonymous"
    assert items(body)[0] == "sku-7"  # the FR burst leads FR's trending
    assert len(body["items"]) == 5
    assert headers["cache-control"] == [{"key": "Cache-Control", "value": "private, no-store"}]
    assert body["variant"] == "outside" and body["model"] == CHAMPION  # not part of any experiment
    assert body["rec_id"].startswith("none~")


def test_clicks_shape_the_shoppers_recommendations(shop):
    ts = now_ms()
    cookie = shop.cookie("shopper-1")
    shop.post({"event_id": "s0", "type": "view", "user_id": "shopper-1", "item_id": "sku-3", "ts": ts})
    shop.drain()
    _, before, _ = shop.get(cookie=cookie)
    assert before["user_id"] == "shopper-1" and before["fallback"] is False
    assert before["candidates"] >= 300
    shop.post({"events": [{"event_id": f"s{k}", "type": "click", "user_id": "shopper-1", "item_id": "sku-900",
                           "ts": ts + k} for k in range(1, 4)]})
    shop.drain()
    _, after, _ = shop.get(cookie=cookie)
    cluster = {f"sku-{j}" for j in range(901, 905)}
    assert cluster & set(items(after)), "co-visited neighbours of the clicked item are recommended"
    assert items(after) != items(before)


def test_a_sold_out_item_vanishes_from_every_path_and_returns_when_restocked(shop):
    ts = now_ms()
    cookie = shop.cookie("shopper-2")
    shop.post({"event_id": "v1", "type": "view", "user_id": "shopper-2", "item_id": "sku-7", "ts": ts})
    shop.drain()
    shop.refresh()
    assert "sku-7" in items(shop.get(country="FR")[1])
    try:
        shop.post({"event_id": "st1", "type": "stock", "item_id": "sku-7", "ts": ts + 1, "stock": 0})
        shop.drain()
        shop.refresh()  # the sold-out list, without a new snapshot
        for cookie_, country in ((None, "FR"), (cookie, "FR"), (None, "US"), (cookie, "DE")):
            assert "sku-7" not in items(shop.get("k=50", cookie=cookie_, country=country)[1])
    finally:  # restocked (above LOW_STOCK) whatever happened: the module's other tests read this shop
        shop.post({"event_id": "st2", "type": "stock", "item_id": "sku-7", "ts": ts + 2, "stock": 40})
        shop.drain()
        shop.refresh()
    assert "sku-7" in items(shop.get(country="FR")[1])


@pytest.mark.parametrize("query, message", [
    pytest.param("k=0", "k must be an integer from 1 to 50", id="k-zero"),
    pytest.param("k=51", "k must be an integer from 1 to 50", id="k-too-big"),
    pytest.param("k=ten", "k must be an integer from 1 to 50", id="k-not-a-number"),
    pytest.param("k=5&context_item=" + "x" * 129, "context_item", id="context-too-long"),
])
def test_a_bad_query_gets_a_400_with_a_message(shop, query, message):
    status, body, _ = shop.get(query)
    assert status == 400
    assert message in body["message"]


def test_a_failing_user_read_falls_back_without_an_error(shop, monkeypatch):
    monkeypatch.setattr(shop.recommender(), "users", MemoryUserStore(fail=True))
    status, body, _ = shop.get(cookie=shop.cookie("shopper-3"))
    assert status == 200 and body["fallback_reason"] == "user_read_failed" and body["items"]


def test_other_requests_pass_through_unchanged(shop):
    event = cloudfront_event("GET", "/static/app.js", {}, {})
    assert shop.edge.lambda_handler(event, context("edge")) == event["Records"][0]["cf"]["request"]


@pytest.mark.parametrize("event", [
    pytest.param({}, id="empty"),
    pytest.param({"Records": []}, id="no-records"),
    pytest.param({"Records": [{"cf": {"response": {"status": "200"}}}]}, id="a-response-event"),
    pytest.param("not even a dict", id="string"),
])
def test_unexpected_events_get_a_well_formed_answer(shop, event):
    answer = shop.edge.lambda_handler(event, context("edge"))
    assert answer["status"] == "400"
    assert json.loads(answer["body"])["message"]


def test_a_post_to_recommendations_is_a_405(shop):
    answer = shop.edge_get(method="POST")
    assert answer["status"] == "405"


def test_an_internal_edge_failure_passes_the_request_to_the_origin(shop, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(shop.recommender(), "recommend", broken)
    answer = shop.edge_get()
    assert answer["uri"] == "/recommendations"  # a request, not a response


def test_the_regional_function_answers_the_same_api(shop):
    app = shop.recommend_app
    app.recommender.warm()
    app.figures.flush_every_s = 3600.0  # its figures stay pending: read below
    event = http_api_event("GET", "/recommendations", headers={"cookie": shop.cookie("shopper-4"),
                                                               "cloudfront-viewer-country": "FR",
                                                               "x-origin-verify": shop.stack.origin_token},
                           query={"k": "3"})
    response = app.lambda_handler(event, context("recommend"))
    body = response_json(response)
    assert response["statusCode"] == 200 and len(body["items"]) == 3
    assert body["user_id"] == "shopper-4"
    assert response["headers"]["Cache-Control"] == "private, no-store"
    # The rollback monitor's shoppers: a second answer to the same shopper is no second shopper
    # (a minute turning between the two counts it once more).
    app.lambda_handler(event, context("recommend"))
    counts = app.figures.pending.counts
    variant = (("variant", body["variant"]),)
    assert counts[("Requests", variant)] == 2 and 1 <= counts[("Shoppers", variant)] <= 2


def test_the_flags_document_was_really_loaded(shop):
    shop.get()
    store = shop.edge._state["rollout"].store
    assert store.loaded and store.loads >= 1 and store.failures == 0
    assert store.document["champion_model"]["default"] == CHAMPION


def test_a_sample_of_scored_requests_is_logged_for_training(shop, monkeypatch):
    recommender = shop.recommender()
    logged = []
    monkeypatch.setattr(recommender, "log_sample_rate", 1.0)
    monkeypatch.setattr(recommender, "on_scored", logged.append)
    cookie = shop.cookie("shopper-5")
    shop.post({"event_id": "l1", "type": "view", "user_id": "shopper-5", "item_id": "sku-3", "ts": now_ms()})
    shop.drain()
    _, body, _ = shop.get(cookie=cookie)
    [record] = logged
    assert record["rec_id"] == body["rec_id"] and record["model"] == body["model"]
    vectors = decode_vectors(record)  # exactly what the model scored: float32, one row per candidate
    assert vectors.shape == (len(decode_candidates(record)), len(record["features"])) == (body["candidates"],
                                                                                     len(record["features"]))
    assert record["returned"] == items(body)


def test_every_client_the_edge_makes_signs_as_the_edge(shop, tmp_path):
    """Its cold start's loads run on a pool, where a lazily made client (the signing keys'
    Secrets Manager) once signed as the administrator: IAM went untested for it, and the check
    that the edge makes only clients its bundle's SDK knows (infra/local/handlers.py) missed it.
    A new edge, as a new container: its clients made anew (the cache forgotten)."""
    from personalize.adapters import aws

    made = []

    def hook(client):
        made.append((client.meta.service_model.service_name, aws.current_identity()))

    aws.reset()
    edge = shop.with_new_serving(tmp_path)
    aws.on_new_client(hook)
    try:
        status, _, _ = edge.get(cookie=edge.cookie("shopper-1"))
    finally:
        aws.remove_client_hook(hook)
    assert status == 200
    services = {service for service, _ in made}
    assert {"s3", "dynamodb", "secretsmanager"} <= services, made
    assert all(who == shop.stack.identities.functions["edge"] for _, who in made), made
