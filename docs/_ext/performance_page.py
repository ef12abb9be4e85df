"""Sphinx extension: the "Performance" page, rendered from the benchmark
results in ``experiments/results`` at build time.

Every ``bench_*.json`` becomes a section, so a new benchmark file appears
without editing the docs: its ``command`` as a code block, then its numbers
as tables (scalars; mappings of scalars or of lists; mappings of mappings as
a matrix; lists of records as rows, nested records flattened one level).
``peers.json`` (pyrovae against stock Pyro and pythae) comes first, rendered
by ``experiments/peers.py``'s own table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiment_modules import RESULTS, load
from rst import register_page

#: what a reader should know about a benchmark, by file-name prefix; others get no preface
PREFACES = {
    "bench_ddp_steps": "Milliseconds per training step with two processes under torchrun (gloo) against one "
                       "process, and where the time goes (`experiments/bench_ddp.py --steps`).",
    "bench_ddp": "Seconds per epoch: one process with one or two threads against two data-parallel processes "
                 "(`experiments/bench_ddp.py`).",
    "bench_memory_is": "Peak memory of the importance-sampled log-likelihood as K and the chunk size grow: memory "
                       "follows the chunk, not K (`experiments/bench_memory.py is-all`).",
    "bench_memory_mmap": "Training on a memory-mapped `.npy` file against the same file loaded in memory "
                         "(`experiments/bench_memory.py mmap-all`).",
    "bench_train": "Seconds per training epoch of pyrovae against hand-written and stock-Pyro loops "
                   "(`experiments/bench_train.py`).",
    "bench_loglik": "Decoder passes per second of the importance-sampled log-likelihood "
                    "(`experiments/bench_loglik.py`).",
}


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "—"}[value]
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, list) and all(is_scalar(v) for v in value):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "\\|")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings one level down become ``outer.inner`` keys."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if is_scalar(v) or isinstance(v, list)})
        else:
            out[key] = value
    return out


def value_tables(data: dict[str, Any]) -> str:
    """Tables for every entry of a benchmark record but its ``command``."""
    scalars = [[f"`{k}`", fmt(v)] for k, v in data.items()
               if k != "command" and (is_scalar(v) or (isinstance(v, list) and all(is_scalar(x) for x in v)))]
    parts = [md_table(["quantity", "value"], scalars)] if scalars else []
    for key, value in data.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            columns = list(dict.fromkeys(c for v in value.values() for c in v))
            rows = [[k] + [fmt(v.get(c)) for c in columns] for k, v in value.items()]
            parts.append(f"`{key}`:\n\n" + md_table([""] + columns, rows))
        elif isinstance(value, dict) and value:
            parts.append(f"`{key}`:\n\n" + md_table(["", "value"], [[k, fmt(v)] for k, v in value.items()]))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            flat = [flatten(v) for v in value]
            columns = list(dict.fromkeys(c for v in flat for c in v))
            rows = [[fmt(v.get(c)) for c in columns] for v in flat]
            parts.append(f"`{key}`:\n\n" + md_table([f"`{c}`" for c in columns], rows))
    return "\n".join(parts)


def preface(stem: str) -> str:
    for prefix in sorted(PREFACES, key=len, reverse=True):
        if stem.startswith(prefix):
            return PREFACES[prefix]
    return ""


def benchmark_section(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [f"### `{path.name}`", ""]
    if preface(path.stem):
        lines += [preface(path.stem), ""]
    if isinstance(data, dict) and data.get("command"):
        lines += ["```bash", f"python {data['command']}", "```", ""]
    if isinstance(data, dict):
        lines.append(value_tables(data))
    else:
        lines += ["```json", json.dumps(data, indent=1), "```"]
    return "\n".join(lines)


def peers_section() -> str:
    path = RESULTS / "peers.json"
    if not path.exists():
        return ""
    record = json.loads(path.read_text())
    return "\n".join(["## Side by side with peers", "",
                      ("`experiments/peers.py`: the same VAE trained for the same epochs by pyrovae, by the stock "
                      "Pyro tutorial loop and by pythae, all scored by pyrovae's IS evaluator."), "",
                      load("peers").markdown(record), ""])


def performance_page() -> str:
    benchmarks = sorted(RESULTS.glob("bench_*.json"))
    head = [
        "(performance)=", "", "# Performance", "",
        ("Rendered from `experiments/results/peers.json` and every `experiments/results/bench_*.json` when this "
        "site was built. The numbers were measured on this project's machine (2 CPU cores, no GPU), which "
        "other jobs shared: each benchmark records its command and, where it measured it, the load average."),
        "",
    ]
    body = [peers_section(), "## Benchmarks", ""] + [benchmark_section(p) for p in benchmarks]
    if not benchmarks:
        body.append("No `bench_*.json` results yet.")
    return "\n".join(head + [b for b in body if b is not None])


def setup(app):
    app.setup_extension("myst_parser")
    return register_page(app, "performance.md", performance_page)
