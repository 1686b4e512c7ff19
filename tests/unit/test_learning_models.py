"""The offline evaluation's pieces: ties broken at random (never by the candidate order),
TIFU-KNN as its authors group a history, the minimum detectable effect, and the exact export
of a LightGBM lambdarank booster to ONNX."""

import hashlib

import numpy as np
import pytest

from models import learners, metrics, tifu
from personalize.serving.models import Manifest, Ranker


def test_ties_are_broken_at_random_not_by_the_candidate_order():
    """All-equal scores: index order would put the first ten candidates (where the generator
    puts the shopper's usual items) on top; a random draw earns what chance earns."""
    y = np.zeros(300, dtype=bool)
    y[:10] = True
    flat = [np.zeros(300, dtype=np.float32)] * 200
    by_index = metrics.per_example(flat, [y] * 200, [10] * 200)[:, 0].mean()
    honest = metrics.per_decision(flat, [y] * 200, [10] * 200, seed=1)[:, 0].mean()
    assert by_index == pytest.approx(1.0)
    assert honest < 0.1
    # strictly ordered scores: both agree
    s = [np.linspace(1, 0, 300)] * 3
    np.testing.assert_allclose(metrics.per_decision(s, [y] * 3, [10] * 3, 0), metrics.per_example(s, [y] * 3, [10] * 3))


def test_tie_share_counts_undecided_top_10_boundaries():
    assert metrics.tie_share([np.arange(20, dtype=float)]) == {"boundary": 0.0, "any": 0.0}
    s = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 1, 0], dtype=float)
    assert metrics.tie_share([s]) == {"boundary": 1.0, "any": 1.0}


def test_minimum_detectable_effect_shrinks_with_the_square_root_of_the_sample():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.1, 400)
    assert metrics.mde(d[:100]) / metrics.mde(d) == pytest.approx(2.0, rel=0.15)
    assert metrics.mde(d) == pytest.approx(2.8016 * d.std(ddof=1) / 20, rel=1e-3)


@pytest.mark.parametrize("n, groups, sizes", [
    pytest.param(2, 3, [1, 1], id="fewer-baskets-than-groups"),
    pytest.param(9, 3, [3, 3, 3], id="divides"),
    pytest.param(10, 3, [3, 3, 4], id="the-last-group-is-longer"),
    pytest.param(11, 3, [3, 4, 4], id="the-last-two-are-longer"),
])
def test_tifu_groups_a_history_as_its_authors_do(n, groups, sizes):
    bounds = tifu._group_bounds(n, groups)
    assert [e - s for s, e in bounds] == sizes and bounds[0][0] == 0 and bounds[-1][1] == n


def test_tifu_weights_recent_baskets_and_groups_more():
    baskets = [np.array([0]), np.array([1]), np.array([2])]
    v = tifu.history_vector(baskets, 3, tifu.Params(groups=3, r_b=0.5, r_g=0.5))
    assert v[2] > v[1] > v[0]
    flat = tifu.history_vector(baskets, 3, tifu.Params(groups=1, r_b=1.0, r_g=1.0))
    assert flat[0] == flat[1] == flat[2] == pytest.approx(1 / 3)


def test_a_lightgbm_ranker_exports_to_onnx_exactly():
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    X = rng.random((6000, len(learners.FEATURES))).astype(np.float32)
    X[:, 3] = np.round(X[:, 3] * 4)  # many rows exactly on a split threshold
    y = (X[:, 0] + X[:, 1] * X[:, 3] + rng.normal(0, 0.5, len(X)) > 2).astype(int)
    params = {k: v for k, v in learners.lgbm_params(num_leaves=15).items() if k not in ("metric", "eval_at")}
    booster = lgb.train(params, lgb.Dataset(X, y, group=np.full(120, 50)), num_boost_round=40)
    blob = learners.lgbm_to_onnx(booster, len(learners.FEATURES))
    ranker = Ranker(Manifest("t", "v", hashlib.sha256(blob).hexdigest(), learners.FEATURES, {}), blob)
    test = rng.random((2000, len(learners.FEATURES))).astype(np.float32)
    test[:, 3] = np.round(test[:, 3] * 4)
    ours = ranker.session.run(None, {"features": test})[0].ravel()
    np.testing.assert_allclose(ours, booster.predict(test), rtol=0, atol=2e-5)


def test_a_threshold_rounds_down_to_the_float32_that_splits_the_same():
    for t in (0.1, 1 / 3, 2.5, 1e-8, 123456.789):
        f = learners._f32_at_most(t)
        assert float(f) <= t < float(np.nextafter(f, np.float32(np.inf)))
