"""Pyro's own ELBO tests as an oracle for the ``elbo`` objective.

``LeanTraceELBO`` claims to be ``Trace_ELBO``: the same loss and the same
gradients for every model/guide pair Pyro accepts. Pyro's test files
``tests/infer/test_gradient.py``, ``test_valid_models.py`` and
``test_autoguide.py`` exercise ``Trace_ELBO`` on hundreds of such pairs
(score-function sites, nested and subsampled plates, messenger guides,
every autoguide). This script runs them twice, each in its own pytest
process, with Pyro's validation off in both (the trainer's default, and
the only case where the lean path runs):

- ``trace_elbo``: as written;
- ``lean``: with ``pyro.infer.Trace_ELBO`` (and ``pyro.infer.trace_elbo.Trace_ELBO``)
  replaced by :class:`pyrovae.infer.objectives.LeanTraceELBO` before the
  test files import it,

and reports both pass/fail sets, their difference, and how often the lean
path ran against how often it handed off to ``Trace_ELBO`` (so that an
agreement is not vacuous). A test that passes with ``Trace_ELBO`` and
fails with the objective is a wrong answer or a crash to fix.

The test files come from a Pyro checkout fetched into a git directory
(``--pyro-git``, e.g. a mirror of github.com/pyro-ppl/pyro) at ``--ref``,
with Pyro's ``tests/common.py``, ``tests/conftest.py`` and its pytest
warning filters. Run (about 15-30 minutes on two cores)::

    PYTHONPATH=. python experiments/pyro_elbo_suite.py --pyro-git /path/to/pyro/.git \\
        --out experiments/results/pyro_elbo_suite.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

TEST_FILES = ("tests/infer/test_gradient.py", "tests/infer/test_valid_models.py", "tests/infer/test_autoguide.py")
SUPPORT_FILES = ("tests/__init__.py", "tests/common.py", "tests/conftest.py", "tests/infer/__init__.py")

# Pyro's setup.cfg: warnings are errors, less a few of torch's and numpy's
PYTEST_INI = """[pytest]
filterwarnings = error
    ignore:numpy.ufunc size changed:RuntimeWarning
    ignore:numpy.dtype size changed:RuntimeWarning
    ignore:Mixed memory format inputs detected:UserWarning
    ignore:Setting attributes on ParameterDict:UserWarning
    ignore:Creating a tensor from a list of numpy.ndarrays is extremely slow
    ignore::DeprecationWarning
    ignore:CUDA initialization:UserWarning
    ignore:__floordiv__ is deprecated:UserWarning
    ignore:floor_divide is deprecated:UserWarning
    ignore:torch.tensor results are registered as constants in the trace
    once::DeprecationWarning
"""

# A pytest plugin, loaded before collection: validation off for every test
# (after Pyro's conftest turns it on), each test seeded, and in the ``lean`` variant the
# objective in Trace_ELBO's place, with a count of its two paths.
PLUGIN = '''
import json, os
import pytest
import pyro

COUNTS = {"lean": 0, "handed_off": 0}

if os.environ["ELBO_SUITE_VARIANT"] == "lean":
    import pyro.infer
    import pyro.infer.trace_elbo
    from pyrovae.infer.objectives import LeanTraceELBO

    lean_loss, applies = LeanTraceELBO._lean_loss, LeanTraceELBO._lean_applies

    def counted_loss(self, *args):
        COUNTS["lean"] += 1
        return lean_loss(self, *args)

    def counted_applies(self, guide):
        ok = applies(self, guide)
        COUNTS["handed_off"] += not ok
        return ok

    LeanTraceELBO._lean_loss, LeanTraceELBO._lean_applies = counted_loss, counted_applies
    # named as the class it replaces, so that parametrized test ids match
    Replacement = type("Trace_ELBO", (LeanTraceELBO,), {})
    pyro.infer.Trace_ELBO = Replacement
    pyro.infer.trace_elbo.Trace_ELBO = Replacement


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item):
    pyro.enable_validation(False)
    if not item.get_closest_marker("init"):
        pyro.set_rng_seed(0)  # the same draws in both variants, whatever ran before


def pytest_unconfigure(config):
    with open(os.environ["ELBO_SUITE_COUNTS"], "w") as f:
        json.dump(COUNTS, f)
'''


def extract(git_dir: str, ref: str, dest: Path) -> str:
    """The test files at ``ref`` under ``dest``; returns the commit."""
    commit = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", ref], check=True, capture_output=True,
                            text=True).stdout.strip()
    for path in SUPPORT_FILES + TEST_FILES:
        text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                              capture_output=True, text=True).stdout
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_text(text)
    (dest / "pytest.ini").write_text(PYTEST_INI)
    (dest / "elbo_suite_plugin.py").write_text(PLUGIN)
    return commit


def outcomes(junit: Path) -> dict:
    """``{test id: "passed" | "failed" | "skipped"}`` from a JUnit XML report."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        result[name] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    return result


def run_variant(variant: str, root: Path, timeout: float, extra) -> dict:
    junit, counts = root / f"{variant}.xml", root / f"{variant}.counts.json"
    env = {**os.environ, "ELBO_SUITE_VARIANT": variant, "ELBO_SUITE_COUNTS": str(counts),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "elbo_suite_plugin", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *TEST_FILES, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if not junit.exists():
        raise RuntimeError(f"{variant}: pytest wrote no report\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"outcomes": outcomes(junit), "paths": json.loads(counts.read_text()) if counts.exists() else None,
            "seconds": round(seconds, 1), "summary": proc.stdout.strip().splitlines()[-1:]}


def compare(reference: dict, candidate: dict) -> dict:
    """Tests whose outcome differs, by direction."""
    names = sorted(set(reference) | set(candidate))
    differ = {n: (reference.get(n, "absent"), candidate.get(n, "absent")) for n in names
              if reference.get(n) != candidate.get(n)}
    return {
        "passed_with_trace_elbo_failed_with_lean": [n for n, (a, b) in differ.items() if a == "passed" and b == "failed"],
        "failed_with_trace_elbo_passed_with_lean": [n for n, (a, b) in differ.items() if a == "failed" and b == "passed"],
        "other_differences": {n: v for n, v in differ.items() if "failed" not in v or "passed" not in v},
    }


def counts(result: dict) -> dict:
    kinds = list(result.values())
    return {k: kinds.count(k) for k in ("passed", "failed", "skipped")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyro-git", required=True, help="a git directory holding Pyro's history")
    parser.add_argument("--ref", default="HEAD", help="the Pyro commit or tag whose tests to run")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per variant")
    parser.add_argument("--out", help="also write the result as JSON here")
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments (e.g. -k)")
    args = parser.parse_args(argv)
    import pyro
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        commit = extract(args.pyro_git, args.ref, root)
        runs = {v: run_variant(v, root, args.timeout, args.pytest_args) for v in ("trace_elbo", "lean")}
    reference, lean = runs["trace_elbo"]["outcomes"], runs["lean"]["outcomes"]
    record = {
        "command": "experiments/pyro_elbo_suite.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "pyro_tests_commit": commit, "pyro": pyro.__version__, "torch": torch.__version__,
        "validation": False, "files": list(TEST_FILES),
        "trace_elbo": {"counts": counts(reference), "seconds": runs["trace_elbo"]["seconds"],
                       "failed": sorted(n for n, k in reference.items() if k == "failed")},
        "lean": {"counts": counts(lean), "seconds": runs["lean"]["seconds"], "paths": runs["lean"]["paths"],
                 "failed": sorted(n for n, k in lean.items() if k == "failed")},
        "difference": compare(reference, lean),
    }
    print(json.dumps({k: v for k, v in record.items() if k not in ("trace_elbo", "lean")}, indent=1))
    for variant in ("trace_elbo", "lean"):
        r = record[variant]
        print(f"{variant}: {r['counts']} in {r['seconds']} s" + (f", paths {r['paths']}" if "paths" in r else ""))
        for name in r["failed"]:
            print(f"  failed: {name}")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))
    return 1 if record["difference"]["passed_with_trace_elbo_failed_with_lean"] else 0


if __name__ == "__main__":
    sys.exit(main())
