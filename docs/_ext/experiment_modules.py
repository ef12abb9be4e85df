"""Load the scripts of ``experiments/`` (not a package) by path, so the
pages rendered from results reuse the scripts' own tables."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
RESULTS = EXPERIMENTS / "results"


def load(name: str) -> ModuleType:
    """``experiments/<name>.py`` as a module (imported once per build)."""
    key = f"_pyrovae_experiments_{name}"
    if key in sys.modules:
        return sys.modules[key]
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))  # the scripts import their sibling modules
    spec = importlib.util.spec_from_file_location(key, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module
