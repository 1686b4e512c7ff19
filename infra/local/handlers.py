"""Import ``functions/<name>/app.py`` in-process, under a unique module name."""

from __future__ import annotations

import importlib.util
import sys

from .template import ROOT


def load(name: str, fresh: bool = True):
    module_name = f"functions_{name}_app"
    if not fresh and module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
