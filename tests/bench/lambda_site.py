"""A Lambda-like ``sys.path`` for the bench's cold-start children.

The dev venv holds packages that no function ships: awscrt (about 60 ms to import) and
pyOpenSSL with cryptography (about 35 ms), both of which botocore imports when it finds them.
A child that runs on the venv's site-packages pays for them in its cold start *and* in its
bare-imports floor, which flatters the ratio of the two (measured 2026-12-07: the floor 303 ms
with them). In Lambda only the bundle or the layers and the runtime's own SDK are on the path, so
the children run ``python -S`` (no site-packages) with a folder of links to exactly the
distributions the function ships (``edge_build.PACKAGES``, the SDK's, the dependencies layer's).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path


def _top_level(dist: importlib.metadata.Distribution) -> set[str]:
    """The names a distribution puts beside the others in site-packages (packages, modules,
    vendored library folders such as ``numpy.libs``), without its metadata folder."""
    names = set()
    for file in dist.files or ():
        first = Path(file).parts[0]
        if first.endswith((".dist-info", ".egg-info", ".data")) or first in ("..", "__pycache__"):
            continue
        names.add(first)
    return names


def _requirements(name: str) -> list[str]:
    """A distribution's unconditional requirements (no extras, no environment markers)."""
    out = []
    for requirement in importlib.metadata.requires(name) or ():
        if ";" in requirement:
            continue
        out.append(re.split(r"[\s<>=!~\[(]", requirement, maxsplit=1)[0])
    return out


def closure(names: list[str]) -> list[str]:
    """``names`` and their unconditional requirements, transitively (what ``pip install``
    without ``--no-deps`` puts in a layer)."""
    seen: dict[str, None] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = None
        todo.extend(_requirements(name))
    return list(seen)


def make(into: Path, distributions: list[str]) -> Path:
    """A folder of links to ``distributions``' files in this interpreter's site-packages (the
    pins the function ships): on a child's path in place of site-packages."""
    into.mkdir(parents=True, exist_ok=True)
    for name in distributions:
        dist = importlib.metadata.distribution(name)
        root = Path(dist.locate_file(""))
        for top in _top_level(dist):
            link = into / top
            if not link.exists() and (root / top).exists():
                os.symlink(root / top, link)
            if top.endswith(".py"):  # a module's bytecode sits in its folder's __pycache__: linked too
                (into / "__pycache__").mkdir(exist_ok=True)
                for pyc in (root / "__pycache__").glob(f"{top[:-3]}.*.pyc"):
                    if not (into / "__pycache__" / pyc.name).exists():
                        os.symlink(pyc, into / "__pycache__" / pyc.name)
    return into


def prologue(paths: list[Path]) -> str:
    """Program text that puts ``paths`` first on ``sys.path`` (run with ``python -S``: nothing
    else but the standard library)."""
    return f"import sys\nsys.path[:0] = {[str(p) for p in paths]!r}\n"
