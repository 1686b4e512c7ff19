"""The model registry's contract, as serving reads it: a version folder holds
``model.onnx`` and ``manifest.json``; a model is refused when its file's sha256 differs from
the manifest's or its features are not ones this code computes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personalize.serving.ranking import FEATURES, INDEX

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


class ModelError(ValueError):
    """A model that must not be served; the message says why."""


@dataclass
class Manifest:
    name: str
    version: str
    sha256: str
    features: list[str]
    doc: dict

    @classmethod
    def from_dict(cls, doc: dict) -> Manifest:
        missing = [k for k in ("name", "version", "sha256", "features") if k not in doc]
        if missing:
            raise ModelError(f"manifest lacks {', '.join(missing)}")
        return cls(doc["name"], doc["version"], doc["sha256"], list(doc["features"]), doc)


def artifact_digest(model_bytes: bytes, manifest_bytes: bytes) -> str:
    """What a deployer pins for a model kept in the bucket: one sha256 over both files' sha256,
    so neither the model nor its manifest (feature order!) can be swapped."""
    return hashlib.sha256(hashlib.sha256(model_bytes).digest() + hashlib.sha256(manifest_bytes).digest()).hexdigest()


def verify(manifest: Manifest, model_bytes: bytes) -> None:
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != manifest.sha256:
        raise ModelError(f"{manifest.name}/{manifest.version}: model.onnx sha256 {digest[:12]}... does not "
                         f"match the manifest's {manifest.sha256[:12]}...")
    unknown = [f for f in manifest.features if f not in INDEX]
    if unknown:
        raise ModelError(f"{manifest.name}/{manifest.version}: features unknown to this code: {unknown}; "
                         f"known: {list(FEATURES)}")
    if len(set(manifest.features)) != len(manifest.features):
        raise ModelError(f"{manifest.name}/{manifest.version}: duplicate features in the manifest")


def inference_session(model_bytes: bytes):
    """The onnxruntime session serving runs a model in: single-threaded, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


class Ranker:
    """An ONNX ranker: one session, single-threaded, created once per process."""

    def __init__(self, manifest: Manifest, model_bytes: bytes):
        verify(manifest, model_bytes)
        self.manifest = manifest
        self.session = inference_session(model_bytes)
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "probabilities" if "probabilities" in outputs else outputs[-1]
        self.columns = np.array([INDEX[f] for f in manifest.features], dtype=np.intp)

    @property
    def key(self) -> str:
        return f"{self.manifest.name}/{self.manifest.version}"

    def score(self, X: np.ndarray) -> np.ndarray:
        """Scores for a catalogue feature matrix (``ranking.FEATURES`` columns)."""
        return self.run(np.ascontiguousarray(X[:, self.columns]) if len(X) else X)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Scores for a matrix of this model's features (``manifest.features`` columns, in
        order; float32, C-ordered), as ``prepared.Served.inputs`` builds it."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return out[:, -1] if out.ndim == 2 else out.ravel()


def load_folder(folder: Path) -> Ranker:
    manifest = Manifest.from_dict(json.loads((folder / MANIFEST_FILE).read_text()))
    return Ranker(manifest, (folder / MODEL_FILE).read_bytes())
