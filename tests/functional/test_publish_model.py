"""make publish-model: a version goes to the artifacts bucket and serving loads it from there."""

import hashlib
import json
import shutil

import pytest

from infra.ops import registry_pins
from models import publish
from personalize.adapters import aws
from personalize.adapters.artifacts import S3Artifacts
from personalize.serving.models import ModelError
from personalize.serving.wiring import ModelCache

SHIPPED = publish.ROOT / "models" / "ranker-linear" / "v1"


def test_a_published_model_is_served_from_the_bucket(stack, tmp_path):
    bucket = stack.names["ArtifactsBucket"]
    keys = publish.publish(SHIPPED, bucket, aws.client("s3"))
    assert keys == ["models/ranker-linear/v1/model.onnx", "models/ranker-linear/v1/manifest.json"]
    pinned = registry_pins("ranker-linear/v1")["ranker-linear/v1"]
    cache = ModelCache(tmp_path / "nothing-bundled", S3Artifacts(bucket), pins=lambda: {"ranker-linear/v1": pinned})
    ranker = cache.get("ranker-linear/v1")
    assert ranker.key == "ranker-linear/v1" and cache.refused == 0


def test_a_bucket_model_without_a_pin_is_never_loaded(stack, tmp_path):
    publish.publish(SHIPPED, stack.names["ArtifactsBucket"], aws.client("s3"))
    cache = ModelCache(tmp_path / "nothing-bundled", S3Artifacts(stack.names["ArtifactsBucket"]))
    with pytest.raises(ModelError, match="pins no sha256"):
        cache.get("ranker-linear/v1")
    assert cache.refused == 1


def test_a_model_replaced_in_the_bucket_is_refused_before_parsing(stack, tmp_path, monkeypatch):
    """Someone with write access to the bucket replaces model.onnx and its manifest with a
    consistent pair: the pin in the flags document (deployer-only) still refuses it, before
    onnxruntime sees a byte, and serving keeps the model it has."""
    bucket = stack.names["ArtifactsBucket"]
    pinned = registry_pins("ranker-linear/v1")["ranker-linear/v1"]
    evil = tmp_path / "ranker-linear" / "v1"
    shutil.copytree(SHIPPED, evil)
    (evil / "model.onnx").write_bytes((evil / "model.onnx").read_bytes() + b"\x00")
    manifest = json.loads((evil / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256((evil / "model.onnx").read_bytes()).hexdigest()
    (evil / "manifest.json").write_text(json.dumps(manifest))
    publish.publish(evil, bucket, aws.client("s3"))
    parsed = []
    import personalize.serving.models as models_module
    real = models_module.Ranker.__init__
    monkeypatch.setattr(models_module.Ranker, "__init__", lambda self, *a: parsed.append(a) or real(self, *a))
    cache = ModelCache(tmp_path / "nothing-bundled", S3Artifacts(bucket), pins=lambda: {"ranker-linear/v1": pinned})
    with pytest.raises(ModelError, match="not the pinned"):
        cache.get("ranker-linear/v1")
    assert cache.refused == 1 and parsed == []
    gets = aws.client("s3").meta.events
    fetched = []
    gets.register("before-call.s3.GetObject", lambda **kw: fetched.append(1))
    for _ in range(5):  # later requests do not fetch it again while the refusal stands
        with pytest.raises(ModelError):
            cache.get("ranker-linear/v1")
    assert fetched == []


def test_a_manifest_reordered_in_the_bucket_is_refused(stack, tmp_path):
    """The pin covers the manifest too: the same model with its features reordered would be
    fed the wrong columns."""
    bucket = stack.names["ArtifactsBucket"]
    pinned = registry_pins("ranker-linear/v1")["ranker-linear/v1"]
    evil = tmp_path / "ranker-linear" / "v1"
    shutil.copytree(SHIPPED, evil)
    manifest = json.loads((evil / "manifest.json").read_text())
    manifest["features"] = manifest["features"][::-1]
    (evil / "manifest.json").write_text(json.dumps(manifest))
    publish.publish(evil, bucket, aws.client("s3"))
    cache = ModelCache(tmp_path / "nothing-bundled", S3Artifacts(bucket), pins=lambda: {"ranker-linear/v1": pinned})
    with pytest.raises(ModelError, match="not the pinned"):
        cache.get("ranker-linear/v1")


def test_a_tampered_folder_is_refused_before_upload(stack, tmp_path):
    folder = tmp_path / "ranker-linear" / "v1"
    shutil.copytree(SHIPPED, folder)
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"x")
    with pytest.raises(ModelError, match="sha256"):
        publish.publish(folder, stack.names["ArtifactsBucket"], aws.client("s3"))
