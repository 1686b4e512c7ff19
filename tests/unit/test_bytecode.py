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
    subprocess.run(["make", "-s", "-C", "layers/personalize", "build-DomainLayer", f"ARTIFACTS_DIR={tmp_path}",
                    f"PYTHON={sys.executable}"], check=True, capture_output=True)
    pycs = list((tmp_path / "python" / "personalize").rglob("*.cpython-312.pyc"))
    assert (tmp_path / "python" / "shipped_models").is_dir()
    assert bool(pycs) == (bytecode.lambda_python() is not None)
