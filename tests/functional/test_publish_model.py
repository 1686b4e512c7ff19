"""make publish-model: a version goes to the artifacts bucket and serving loads it from there."""

import shutil

import pytest

from models import publish
from personalize.adapters import aws
from personalize.adapters.artifacts import S3Artifacts
from personalize.models import ModelError
from personalize.serving_config import ModelCache

SHIPPED = publish.ROOT / "models" / "ranker-linear" / "v1"


def test_a_published_model_is_served_from_the_bucket(stack, tmp_path):
    bucket = stack.names["ArtifactsBucket"]
    keys = publish.publish(SHIPPED, bucket, aws.client("s3"))
    assert keys == ["models/ranker-linear/v1/model.onnx", "models/ranker-linear/v1/manifest.json"]
    cache = ModelCache(tmp_path / "nothing-bundled", S3Artifacts(bucket))
    ranker = cache.get("ranker-linear/v1")
    assert ranker.key == "ranker-linear/v1"


def test_a_tampered_folder_is_refused_before_upload(stack, tmp_path):
    folder = tmp_path / "ranker-linear" / "v1"
    shutil.copytree(SHIPPED, folder)
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"x")
    with pytest.raises(ModelError, match="sha256"):
        publish.publish(folder, stack.names["ArtifactsBucket"], aws.client("s3"))
