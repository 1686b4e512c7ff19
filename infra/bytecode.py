"""Bytecode for what ``sam build`` ships: Lambda's code and layers are read-only (``/var/task``,
``/opt``), so a module without a pyc is compiled at every cold start. Precompiled here by the
runtime's interpreter (python3.12), when this machine has one.

``python infra/bytecode.py DIR``: compile DIR (a layer's build folder); without a python3.12
it says so and ships none, or fails when ``REQUIRE_BYTECODE=1`` (the pipeline's builds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def lambda_python() -> str | None:
    """A python3.12 interpreter (the Lambda runtime's version), if this machine has one: this
    one, on PATH, or one of pyenv's installed versions (its shim refuses an inactive version)."""
    if sys.version_info[:2] == (3, 12) and sys.version_info.releaselevel == "final":
        return sys.executable
    candidates = [shutil.which("python3.12")]
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30).stdout.strip()
        candidates += sorted(str(p) for p in Path(root).glob("versions/3.12*/bin/python3.12")) if root else []
    except (OSError, subprocess.SubprocessError):
        pass
    for path in filter(None, candidates):
        try:
            version = subprocess.run([path, "-c", "import sys; v = sys.version_info; "
                                      "print(v[:2] == (3, 12) and v.releaselevel == 'final')"],
                                     capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if version == "True":
            return path
    return None


def precompile(target: Path, python: str) -> None:
    """Every module of the bundle compiled once, here, by the interpreter that will run it.
    Lambda's ``/var/task`` is read-only: a bundle without bytecode compiles each module it
    imports at every cold start (about 50 ms for ``personalize`` alone on a 2-core machine,
    2026-12-06). Unchecked-hash pycs, because a zip keeps file times to 2 s, which would
    invalidate timestamp pycs (the bundle never changes once built)."""
    done = subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                           str(target)], capture_output=True, text=True)
    if done.returncode != 0:  # a file that does not compile (a template, old syntax) is imported as before
        print(f"bytecode: some files of {target} did not compile:\n{(done.stdout + done.stderr)[-2000:]}",
              file=sys.stderr)


def missing(folder: Path | str) -> int:
    """Without a python3.12: 0 and a warning, or 1 when the build requires bytecode."""
    required = os.environ.get("REQUIRE_BYTECODE") == "1"
    print(f"{'error' if required else 'warning'}: no python3.12 on this machine: {folder} "
          f"{'cannot ship' if required else 'ships'} without bytecode (every cold start would compile what it "
          "imports)", file=sys.stderr)
    return 1 if required else 0


def main(argv: list[str] | None = None) -> int:
    folder = (argv if argv is not None else sys.argv[1:])[0]
    python = lambda_python()
    if python is None:
        return missing(folder)
    precompile(Path(folder), python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
