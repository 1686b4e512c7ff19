"""make retrain and make evaluate end to end on a small dataset (the first 40 shoppers):
manifests carry validation figures and their data window, never a test figure; the test
window is read once per arm (ledgered) and a second evaluation reuses that read."""

import contextlib
import io
import json

import pytest

from models import evaluate, train

USERS = "40"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    args = ["--users", USERS, "--dataset", str(root / "dataset"), "--out", str(root / "registry"),
            "--learners", "ranker-linear", "ranker-mlp"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train.main(args) == 0
    return root, args, json.loads(out.getvalue().strip().splitlines()[-1])


def walk(doc, path=""):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield f"{path}/{k}"
            yield from walk(v, f"{path}/{k}")


def test_retrain_registers_candidates_with_validation_figures_only(workspace):
    root, _, summary = workspace
    assert summary["registered"] == {"ranker-linear": "ranker-linear/v1", "ranker-mlp": "ranker-mlp/v1"}
    for key in summary["registered"].values():
        manifest = json.loads((root / "registry" / key / "manifest.json").read_text())
        assert manifest["role"] == "candidate"
        assert not [p for p in walk(manifest["metrics"]) if "test" in p.lower()]  # no test figure anywhere
        assert "test" not in json.dumps(manifest["metrics"]["validation"])
        assert {"returning", "new", "all", "top10_ties"} <= set(manifest["metrics"]["validation"])
        window = manifest["data"]["window"]
        assert window["id"] == summary["dataset"] and "training orders only" in window["item_features"]
        assert manifest["quantization"]["ships"] in ("float", "int8")


def test_retrain_does_not_register_the_same_model_twice(workspace):
    root, args, summary = workspace
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train.main(args)
    again = json.loads(out.getvalue().strip().splitlines()[-1])
    assert again["registered"] == summary["registered"] and not again["dataset_built"]
    assert sorted(p.name for p in (root / "registry" / "ranker-mlp").iterdir()) == ["v1"]


def test_evaluate_reads_the_test_window_once_per_arm(workspace, monkeypatch):
    root, _, summary = workspace
    ledger = root / "reads.jsonl"
    common = ["--users", USERS, "--dataset", str(root / "dataset"), "--registry", str(root / "registry"),
              "--evaluations", str(root / "evaluations"), "--ledger", str(ledger), "--quick", "--no-ope",
              "--champion", "ranker-linear/v1", "--candidate", "ranker-mlp/v1"]
    assert evaluate.main(common) == 0
    reads = ledger.read_text().splitlines()
    arms = {json.loads(line)["candidate"] for line in reads}
    assert arms == {"ranker-linear/v1", "ranker-mlp/v1", "tifu-knn", "gbdt-lambdarank", "decayed-frequency",
                    "repeat", "popularity"}
    report = json.loads((root / "evaluations" / summary["dataset"] / "report.json").read_text())
    paired = report["paired"]["ranker-linear/v1 - tifu-knn"]
    assert {"returning", "new", "all"} <= set(paired)
    assert paired["returning"]["ndcg_at_10_mde"] > 0 and paired["returning"]["n"] + paired["new"]["n"] == 40
    assert report["test"]["ranker-mlp/v1"]["new"]["ndcg_at_10_interval_width"] > 0
    assert "top10_ties" in report["test"]["ranker-mlp/v1"]

    assert evaluate.main(common) == 0  # the second evaluation reuses every arm's one read
    assert ledger.read_text().splitlines() == reads

    for stored in (root / "evaluations" / summary["dataset"]).glob("ranker-mlp*.json"):
        stored.unlink()  # the read's result is lost: reading again needs a stated reason
    with pytest.raises(SystemExit, match="re-read needs"):
        evaluate.main(common)


@pytest.fixture(scope="module")
def archive_folder(tmp_path_factory):
    """An archive as Firehose writes it (GZIP'd JSON lines under events/), of shoppers the
    Instacart sample's first 40 are not: the next 40, put through the archive function's
    transformation (pseudonyms, hashed event ids)."""
    import gzip

    from models.dataset import InstacartBuilder
    from models.instacart import order_events
    from personalize.ingest import archive

    root = tmp_path_factory.mktemp("archive")
    ids = sorted({o.user_id for o in InstacartBuilder(users=80).orders()}, key=lambda u: int(u[2:]))[40:]
    mine = set(ids)
    lines = [archive.transform("r", json.dumps({**e, "route": "server"}).encode(), "k" * 32).data
             for o in InstacartBuilder(users=80).orders() if o.user_id in mine for e in order_events(o)]
    (root / "events" / "dt=2026-01-05").mkdir(parents=True)
    (root / "events" / "dt=2026-01-05" / "part-1.gz").write_bytes(gzip.compress(b"".join(lines)))
    return root


def test_retrain_and_evaluate_from_the_archive_bootstrapped_by_the_sample(workspace, archive_folder):
    root, _, first = workspace
    args = ["--users", USERS, "--dataset", str(root / "dataset"), "--out", str(root / "registry-archive"),
            "--learners", "ranker-linear", "--archive", str(archive_folder),
            "--archive-dataset", str(root / "archive-dataset")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train.main(args) == 0
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    archive_id = next(d for d in summary["trained_on"] if d.startswith("archive-"))
    # A young archive: the sample's training decisions join its own, the sample's validation chooses.
    assert summary["trained_on"] == [archive_id, first["dataset"]]
    assert summary["bootstrap"]["trains"] and summary["bootstrap"]["chooses"]
    manifest = json.loads((root / "registry-archive" / "ranker-linear" / "v1" / "manifest.json").read_text())
    assert set(manifest["data"]["training_windows"]) == {archive_id, first["dataset"]}
    assert manifest["data"]["training_windows"][archive_id]["source"].startswith("archive")
    assert manifest["training"]["datasets"] == summary["trained_on"]
    assert archive_id in manifest["metrics"]["validation_other_datasets"]  # its validation reported too
    assert not [p for p in walk(manifest["metrics"]) if "test" in p.lower()]

    ledger = root / "archive-reads.jsonl"
    common = ["--archive", str(archive_folder), "--archive-dataset", str(root / "archive-dataset"),
              "--registry", str(root / "registry-archive"), "--evaluations", str(root / "evaluations"),
              "--ledger", str(ledger), "--quick", "--no-ope", "--champion", "ranker-linear/v1"]
    assert evaluate.main(common) == 0
    report = json.loads((root / "evaluations" / archive_id / "report.json").read_text())
    assert report["dataset"]["id"] == archive_id and report["dataset"]["test"].startswith("decisions from")
    assert {json.loads(line)["dataset"] for line in ledger.read_text().splitlines()} == {archive_id}
    assert report["test"]["ranker-linear/v1"]["all"]["ndcg_at_10"] > 0
    # This archive logged no decision (Instacart has no impressions): the estimate says so.
    from_logs = report["off_policy"]["candidates"]["ranker-linear/v1"]
    assert from_logs["not_worse"] is None and from_logs["logged_decisions"] == 0
    assert "fewer than two" in from_logs["why"]
