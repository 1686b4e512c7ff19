"""What sam build ships carries its bytecode (Lambda's code and layers are read-only, so a
module without a pyc is compiled at every cold start): the pycs are the ones imported, and
they survive a zip's 2-second file times."""

import subprocess
import sys
import zipfile

from infra import bytecode


def test_a_precompiled_folder_is_imported_from_its_bytecode_whatever_the_file_times(tmp_path):
    package = tmp_path / "bundle" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "answer.py").write_text("VALUE = 'compiled'\n")
    bytecode.precompile(tmp_path / "bundle", sys.executable)
    assert list(package.glob("__pycache__/answer.*.pyc"))
    # Through a zip (2-second times, as Lambda unpacks it), with the source changed afterwards:
    # an unchecked-hash pyc is still the one imported.
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in (tmp_path / "bundle").rglob("*"):
            if path.is_file():
                z.write(path, path.relative_to(tmp_path / "bundle"))
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(archive).extractall(unpacked)
    (unpacked / "pkg" / "answer.py").write_text("VALUE = 'compiled at cold start'\n")
    out = subprocess.run([sys.executable, "-B", "-c", "import pkg.answer as a; print(a.VALUE)"],
                         cwd=unpacked, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["compiled"]


def test_the_domain_layer_build_compiles_it_when_the_runtimes_python_is_here(tmp_path):
    done = subprocess.run(["make", "-s", "-C", "layers/personalize", "build-DomainLayer", f"ARTIFACTS_DIR={tmp_path}",
                           f"PYTHON={sys.executable}"], check=True, capture_output=True, text=True)
    pycs = list((tmp_path / "python" / "personalize").rglob("*.cpython-312.pyc"))
    assert (tmp_path / "python" / "shipped_models").is_dir()
    if bytecode.lambda_python() is not None:
        assert len(pycs) == len(list((tmp_path / "python" / "personalize").rglob("*.py")))
    else:  # said, not silent
        assert not pycs and "without bytecode" in done.stderr


def test_a_build_that_requires_bytecode_fails_without_the_runtimes_python(monkeypatch, capsys):
    monkeypatch.setenv("REQUIRE_BYTECODE", "1")
    assert bytecode.missing("the edge bundle") == 1 and "error" in capsys.readouterr().err
    monkeypatch.delenv("REQUIRE_BYTECODE")
    assert bytecode.missing("the edge bundle") == 0 and "warning" in capsys.readouterr().err


def test_a_bundle_whose_champion_cannot_load_is_never_built(tmp_path, monkeypatch):
    import pytest

    from infra import edge_build
    from personalize.serving.models import ModelError

    real = edge_build.edge_config("dev")
    monkeypatch.setattr(edge_build, "edge_config", lambda env: {**real, "default_champion": "ranker-mlp/v404"})
    with pytest.raises(ModelError, match="not in the bundle"):
        edge_build.build(tmp_path / "missing", install=False)
    folder = tmp_path / "altered"
    monkeypatch.setattr(edge_build, "edge_config", lambda env: real)
    original = edge_build._check_champion

    def altered(champion):  # the shipped file differs from the one its manifest names
        (champion / "model.onnx").write_bytes((champion / "model.onnx").read_bytes() + b"\0")
        original(champion)

    monkeypatch.setattr(edge_build, "_check_champion", altered)
    with pytest.raises(ModelError, match="sha256"):
        edge_build.build(folder, install=False)
    assert not (folder / "edge_config.json").exists()  # the refused bundle: nothing `make deploy` would take
    assert (folder / "shipped_models" / real["default_champion"] / "model.onnx").exists()  # the one checked
