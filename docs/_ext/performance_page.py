"""Sphinx extension: the "Performance" page, rendered from the benchmark
results in ``experiments/results`` at build time.

The page opens with the headline ratios, then one section per benchmark:
what was run (its ``command``), on what machine and when, a table (and, for
data-parallel training, a plot) of what it gave, and one sentence on what it
shows, worked out from the numbers. ``peers.json`` (pyrovae against stock
Pyro and pythae) is rendered by ``experiments/peers.py``'s own table.

A benchmark's hand-written notes, where it has any, live in
``docs/_notes/performance/<file stem>.md`` and follow its table; a
``bench_*.json`` this module has no table for is still shown, as generic
tables of its values, so a new benchmark appears without editing the docs.
"""

from __future__ import annotations

import functools
import json
import re
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from experiment_modules import RESULTS, load
from rst import generated_dir, register_page, wide

NOTES = Path(__file__).resolve().parents[1] / "_notes" / "performance"


# -- small formatting helpers ---------------------------------------------------------


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


def md_table(header: List[str], rows: List[List[str]], align: str = "") -> str:
    """A markdown table; ``align`` holds one letter per column, ``r`` for right."""
    marks = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def load_average(data: Dict[str, Any]) -> str:
    """The load average a benchmark recorded (its last value), as text; '' if none."""
    for key in ("load_average_at_end", "load_average_after", "load_average"):
        value = data.get(key)
        if isinstance(value, list) and value:
            return f"{value[0]:.1f}"
        if isinstance(value, (int, float)):
            return f"{value:.1f}"
    return ""


def provenance(data: Dict[str, Any]) -> str:
    """'Run on 2026-12-01 on AMD EPYC, 2 cores ..., torch 2.14.1; load average 2.7 at the end.'"""
    where = data.get("cpu") or data.get("machine") or "machine not recorded"
    versions = ", ".join(f"{name} {data[key]}" for key, name in (("torch", "torch"), ("pyro", "pyro-ppl")) if data.get(key))
    text = f"Run on {data.get('date', 'a date not recorded')} on {where}" + (f", {versions}" if versions else "")
    load_txt = load_average(data)
    return text + (f"; load average {load_txt} at the end." if load_txt else ".")


def command(*records: Dict[str, Any]) -> str:
    """The benchmarks' command lines, in one code block ('' if none is recorded)."""
    lines = [f"python {r['command']}" for r in records if r.get("command")]
    return "```bash\n" + "\n".join(lines) + "\n```\n" if lines else ""


def cpu_name(name: str) -> str:
    return name.replace("(R)", "").replace(" Processor", "").strip()


def notes(stem: str) -> str:
    path = NOTES / f"{stem}.md"
    return path.read_text().strip() + "\n" if path.exists() else ""


def read(stem: str) -> Optional[Dict[str, Any]]:
    path = RESULTS / f"{stem}.json"
    return json.loads(path.read_text()) if path.exists() else None


# -- training speed -------------------------------------------------------------------

TRAIN_LABELS = {
    "handwritten": "hand-written eager loop (`torch.optim.Adam`)",
    "handwritten_fused": "hand-written loop, fused Adam",
    "handwritten_compiled": "hand-written loss under `torch.compile`",
    "pyrovae": "**pyrovae `Trainer`** (`LeanTraceELBO`, fused Adam)",
    "pyrovae_trace_elbo": "pyrovae `Trainer` with Pyro's own `Trace_ELBO`",
    "pyrovae_compiled_nets": "pyrovae `Trainer`, networks under `torch.compile`",
    "stock_pyro": "stock Pyro (`SVI`, `pyro.optim.Adam`, validation on)",
}


def bench_train(data: Dict[str, Any]) -> str:
    med = data["median_seconds_per_epoch"]
    eager, fused = data.get("ratio_to_handwritten", {}), data.get("ratio_to_handwritten_fused", {})
    rows = [[TRAIN_LABELS.get(k, f"`{k}`"), f"{v:.2f}", f"{eager[k]:.2f}×" if k in eager else "—",
             f"{fused[k]:.2f}×" if k in fused else "—"] for k, v in med.items()]
    table = md_table([f"variant", f"CPU s / epoch (median of {data.get('repeats', '?')})", "vs eager loop",
                      "vs fused loop"], rows, "lrrr")
    sentence = ""
    if {"pyrovae", "handwritten", "handwritten_fused"} <= set(med):
        sentence = (f"pyrovae's epoch costs {eager['pyrovae']:.2f}× the hand-written eager loop's and "
                    f"{fused['pyrovae']:.2f}× the fused one's")
        if "stock_pyro" in med:
            sentence += f"; the stock Pyro tutorial loop costs {med['stock_pyro'] / med['pyrovae']:.2f}× pyrovae's"
        sentence += ". "
    what = (f"One epoch is {data.get('points_per_epoch', '?'):,} points at batch {data.get('batch_size', '?')} "
            f"with the Burda et al. architecture (784-200-200-50, tanh, Bernoulli), "
            f"{data.get('threads', '?')} thread, timed by the {data.get('clock', '?')} clock. ")
    return "\n".join([sentence + what + provenance(data), "", table])


# -- importance-sampled log-likelihood ---------------------------------------------------


def bench_loglik(data: Dict[str, Any]) -> str:
    med, ratio = data["median_passes_per_second"], data.get("ratio_to_a", {})
    rows = [[f"`{k}`" if k.startswith("pyrovae") else k, f"{v:,.0f}", f"{ratio[k]:.2f}×" if k in ratio else "—"]
            for k, v in med.items()]
    table = md_table([f"variant", f"decoder passes / s (median of {data.get('repeats', '?')})", "vs (a)"], rows, "lrr")
    sentence = ""
    pairs = [("pyrovae, 100 x 100 chunks", "(a) torch loop", "100 × 100"),
             ("pyrovae", "(a') torch loop, 20 x 200 chunks", "20 × 200")]
    equal = [(med[p] / med[h], chunks) for p, h, chunks in pairs if p in med and h in med]
    if equal:
        verdict = ("its generic, trace-based estimator costs nothing measurable" if all(0.95 <= r for r, _ in equal)
                   else "the rest is the cost of its generic, trace-based estimator")
        sentence = (f"At equal chunks pyrovae runs at {' and '.join(f'{r:.2f}× ({c} chunks)' for r, c in equal)} "
                    f"the hand-written loop's speed: {verdict}. ")
    what = (f"N = {data.get('points', '?')} points, K = {data.get('iw_samples', '?'):,} samples, "
            f"{data.get('threads', '?')} thread. ")
    return "\n".join([sentence + what + provenance(data), "", table])


# -- data-parallel training -------------------------------------------------------------

DDP_LABELS = {"1p x 1t": "1 process, 1 thread", "1p x 2t": "1 process, 2 threads", "2p x 1t": "2 processes (torchrun), 1 thread each"}


def _points(data: Dict[str, Any]) -> str:
    m = re.search(r"--subset (\d+)", data.get("command", ""))
    return f"{int(m.group(1)) - 1000:,}" if m else "59,000"  # bench_ddp holds 1000 points out for validation


def ddp_figure(runs: List[Dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one process against two; one process with two threads is in the table (it is off any common scale)
    variants = [v for v in ("1p x 1t", "2p x 1t") if any(v in r["median_seconds_per_epoch"] for r in runs)]
    if not runs or not variants:
        return False
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 2.8), squeeze=False)
    for ax, r in zip(axes.flat, runs):
        values = [r["median_seconds_per_epoch"].get(v, float("nan")) for v in variants]
        bars = ax.bar(range(len(variants)), values, color=["C0", "C2"][: len(variants)], width=0.6)
        ax.bar_label(bars, fmt="%.2f s", fontsize=7)
        ax.set_xticks(range(len(variants)), [DDP_LABELS[v].replace(" (torchrun)", "").replace(", ", "\n")
                                             for v in variants], fontsize=7)
        ax.set_title(f"global batch {r['global_batch']}, epoch of {_points(r)} points", fontsize=8)
        ax.set_ylabel("seconds per epoch", fontsize=7)
        ax.set_ylim(0, max(v for v in values if v == v) * 1.15)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def ddp_section(out_dir: Path) -> str:
    runs = [d for d in (read("bench_ddp_b100"), read("bench_ddp_b1000")) if d]
    steps = [d for d in (read("bench_ddp_steps_b100"), read("bench_ddp_steps_b1000")) if d]
    if not runs and not steps:
        return ""
    lines = ["## Data-parallel training", ""]
    if runs:
        speed = [f"{r['speedup_2p_vs_1p1t']:.2f}× at batch {r['global_batch']}" for r in runs]
        speed[0] = speed[0].replace("×", "× the speed of one process with one thread", 1)
        if all(r["speedup_2p_vs_1p1t"] < 1 for r in runs):
            lines += [
                (f"**Two data-parallel processes on 2 shared cores are slower than one process:** "
                 f"{' and '.join(speed)}. A step of the default model "
                 "takes a few milliseconds, so the fixed cost of each step (Pyro's per-site Python, the gradient "
                 "all-reduce, the wait for the slower rank) outweighs halving the arithmetic, and other jobs held "
                 "the cores. One process with two threads was slower still: its threads fought those jobs for "
                 "the cores."),
                "",
            ]
        else:
            lines += [f"Two data-parallel processes ran at {' and '.join(speed)}.", ""]
        if ddp_figure(runs, out_dir / "performance_ddp.png"):
            lines += ["```{image} performance_ddp.png", ":alt: seconds per epoch, one process against two", "```", ""]
        rows = [[str(r["global_batch"]), _points(r)] + [f"{r['median_seconds_per_epoch'][v]:.2f}"
                                                        for v in DDP_LABELS if v in r["median_seconds_per_epoch"]]
                + [f"{r['speedup_2p_vs_1p1t']:.2f}×", load_average(r)] for r in runs]
        lines += [wide(md_table(["global batch", "points per epoch"] + [f"s / epoch: {DDP_LABELS[v]}" for v in DDP_LABELS]
                                + ["2 processes vs 1", "load average at the end"], rows, "rrrrrrr"))]
        lines += [command(*runs)]
        lines += [provenance(runs[0]).replace(" at the end", f" at the end of batch {runs[0]['global_batch']}"), ""]
    if steps:
        lines += ["### Where a step's time goes", ""]
        by_batch = {s["global_batch"]: s["ms_per_step"] for s in steps}
        if {100, 1000} <= set(by_batch) and all("2p ddp" in v and "1p one process" in v for v in by_batch.values()):
            big, small = by_batch[1000], by_batch[100]
            lines += [
                (f"At batch 1000 a rank spends {big['2p ddp']['cpu_ms']:.1f} ms of CPU on a step against "
                 f"{big['1p one process']['cpu_ms']:.1f} ms for one process, so two free cores could at best run "
                 f"{big['1p one process']['cpu_ms'] / big['2p ddp']['cpu_ms']:.2f}× faster; at batch 100 a rank "
                 f"spends {small['2p ddp']['cpu_ms']:.1f} ms against {small['1p one process']['cpu_ms']:.1f} ms, "
                 "more than the whole step of one process: data parallelism cannot pay on a CPU at that size."),
                "",
            ]
        variants = list(dict.fromkeys(v for s in steps for v in s["ms_per_step"]))
        rows = [[str(s["global_batch"])] + [f"{s['ms_per_step'][v]['wall_ms']:.1f} / {s['ms_per_step'][v]['cpu_ms']:.1f}"
                                            if v in s["ms_per_step"] else "—" for v in variants] for s in steps]
        lines += ["Milliseconds per step, wall / CPU of rank 0, median of the timed steps:", "",
                  md_table(["global batch"] + variants, rows, "r" * (len(variants) + 1))]
        lines += [command(*steps)]
        lines += [provenance(steps[0]), ""]
    lines += [notes("bench_ddp")]
    return "\n".join(lines)


# -- memory -----------------------------------------------------------------------------


def bench_memory_is(data: Dict[str, Any]) -> str:
    rows = [[f"{r['K']:,}", f"{r['chunk_size']:,}", f"{r['seconds']:.2f}", f"{r['peak_increase_mb']:.1f}"]
            for r in data["results"]]
    by = {(r["K"], r["chunk_size"]): r["peak_increase_mb"] for r in data["results"]}
    sentence = ""
    small_k = min(k for k, _ in by)
    big_k = max(k for k, _ in by)
    common = sorted(c for k, c in by if k == small_k and (big_k, c) in by)
    if big_k > small_k and common:
        c = common[0]
        sentence = (f"Peak memory follows the chunk size, not K: with chunks of {c}, K = {big_k:,} added "
                    f"{by[(big_k, c)]:.0f} MB to the process against {by[(small_k, c)]:.0f} MB for K = {small_k:,}. ")
    table = md_table(["K", "samples per chunk", "seconds", "peak memory added (MB)"], rows, "rrrr")
    return "\n".join([sentence + provenance(data), "", table])


def bench_memory_mmap(data: Dict[str, Any]) -> str:
    rows = [[f"{r['file_gb']:g} GB", r["mode"], f"{r['points']:,}", f"{r['rss_at_start_mb']:.0f}",
             f"{r['peak_rss_while_loading_mb']:.0f}", f"{r['peak_rss_while_training_mb']:.0f}", f"{r['ms_per_step']:.1f}"]
            for r in data["results"]]
    mm = [r for r in data["results"] if r["mode"] == "mmap"]
    mem = [r for r in data["results"] if r["mode"] != "mmap"]
    sentence = ""
    if mm and mem:
        sizes = " and ".join(f"{r['file_gb']:g}" for r in mm)
        sentence = (f"Training from a memory-mapped file kept the process at most "
                    f"{max(r['peak_rss_while_training_mb'] for r in mm):.0f} MB for files of {sizes} GB, against "
                    f"{max(r['peak_rss_while_training_mb'] for r in mem):.0f} MB for the {mem[0]['file_gb']:g} GB "
                    f"file loaded in memory, at {statistics.median(r['ms_per_step'] for r in mm):.1f} against "
                    f"{statistics.median(r['ms_per_step'] for r in mem):.1f} ms a step. ")
    table = md_table(["file", "mode", "points", "RSS at start (MB)", "peak while loading (MB)",
                      "peak while training (MB)", "ms / step"], rows, "llrrrrr")
    return "\n".join([sentence + provenance(data), "", wide(table)])


# -- any other benchmark: its values as tables -------------------------------------------------


def flatten(record: Dict[str, Any]) -> Dict[str, Any]:
    """Nested mappings one level down become ``outer.inner`` keys."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if is_scalar(v) or isinstance(v, list)})
        else:
            out[key] = value
    return out


def value_tables(data: Dict[str, Any]) -> str:
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


# -- the page ---------------------------------------------------------------------------

#: benchmarks with a table of their own: file stem -> (section title, renderer)
SECTIONS: Dict[str, tuple] = {
    "bench_train": ("Training speed", bench_train),
    "bench_loglik": ("Importance-sampled log-likelihood", bench_loglik),
    "bench_memory_is": ("Memory of the log-likelihood estimate", bench_memory_is),
    "bench_memory_mmap": ("Training on data larger than memory", bench_memory_mmap),
}
#: rendered together by :func:`ddp_section`
DDP_FILES = ("bench_ddp_b100", "bench_ddp_b1000", "bench_ddp_steps_b100", "bench_ddp_steps_b1000")


def section(stem: str, title: str, render: Callable[[Dict[str, Any]], str]) -> str:
    data = read(stem)
    if data is None:
        return ""
    return "\n".join([f"## {title}", "", render(data), command(data), notes(stem)])


def headline() -> str:
    """The ratios a reader asks for first, each with the benchmark that measures it."""
    rows = []
    train, loglik, peers = read("bench_train"), read("bench_loglik"), read("peers")
    if train and "pyrovae" in train.get("ratio_to_handwritten", {}):
        med = train["median_seconds_per_epoch"]
        rows.append(["training epoch, against a hand-written PyTorch loop",
                     f"{train['ratio_to_handwritten']['pyrovae']:.2f}× the time "
                     f"({train['ratio_to_handwritten_fused']['pyrovae']:.2f}× against one with fused Adam)",
                     "`bench_train.py`", f"{train.get('cpu', '?')}, {train.get('date', '?')}"])
        if "stock_pyro" in med:
            rows.append(["training epoch, against stock Pyro's tutorial loop",
                         f"{med['pyrovae'] / med['stock_pyro']:.2f}× the time", "`bench_train.py`",
                         f"{train.get('cpu', '?')}, {train.get('date', '?')}"])
    if loglik and "pyrovae" in loglik.get("ratio_to_a", {}):
        rows.append(["IS log-likelihood, against a hand-written batched loop",
                     f"{loglik['ratio_to_a']['pyrovae']:.2f}× the speed", "`bench_loglik.py`",
                     f"{loglik.get('cpu', '?')}, {loglik.get('date', '?')}"])
    if peers:
        cpu = {p["name"]: p.get("median_cpu_seconds_per_epoch", p.get("cpu_seconds_per_epoch"))
               for p in peers["peers"] if "error" not in p}
        for name, label in (("pythae", "pythae"), ("pyro", "stock Pyro")):
            if cpu.get("pyrovae") and cpu.get(name):
                rows.append([f"training epoch, CPU time against {label} (same model)",
                             f"{cpu['pyrovae'] / cpu[name]:.2f}× the time", "`peers.py`",
                             f"{cpu_name(peers['machine']['cpu'])}, 2 cores, {peers.get('date', '?')}"])
    if not rows:
        return ""
    return "\n".join(["## Headline", "", "pyrovae against the loops people write by hand and against its peers, "
                      "on one CPU thread (lower time, higher speed is better):", "",
                      md_table(["what", "pyrovae", "measured by", "machine, date"], rows), ""])


def peers_command(args: Dict[str, Any]) -> str:
    """The ``peers.py`` command line that the recorded arguments came from."""
    flags = [("epochs", "--epochs"), ("iw_samples", "--iw-samples"), ("test_limit", "--test-limit"),
             ("repeats", "--repeats")]
    return "experiments/peers.py " + " ".join(f"{flag} {args[key]}" for key, flag in flags if args.get(key) is not None)


def peers_section() -> str:
    record = read("peers")
    if record is None:
        return ""
    return "\n".join(["## Side by side with peers", "",
                      ("`experiments/peers.py`: the same VAE trained for the same epochs by pyrovae, by the stock "
                       "Pyro tutorial loop and by pythae, all scored by pyrovae's IS evaluator. "
                       f"Run on {record.get('date', 'a date not recorded')}."), "",
                      load("peers").markdown(record), "", command({"command": peers_command(record["args"])}),
                      notes("peers")])


def performance_page(out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    head = [
        "(performance)=", "", "# Performance", "",
        ("Rendered from `experiments/results/peers.json` and every `experiments/results/bench_*.json` when this "
         "site was built. Each benchmark ran on a 2-core machine that other jobs shared, so each script "
         "interleaves the variants it compares and reports medians; each section says what was run, on what "
         "machine and when, and what it gave."),
        "",
    ]
    body = [headline(), peers_section()]
    body += [section(stem, title, render) for stem, (title, render) in SECTIONS.items()]
    body.append(ddp_section(out_dir))
    others = [p for p in sorted(RESULTS.glob("bench_*.json")) if p.stem not in SECTIONS and p.stem not in DDP_FILES]
    for path in others:
        data = json.loads(path.read_text())
        body.append("\n".join([f"## `{path.name}`", "", command(data) if isinstance(data, dict) else "",
                               value_tables(data) if isinstance(data, dict) else f"```json\n{json.dumps(data)}\n```",
                               notes(path.stem)]))
    body.append(notes("other"))
    return "\n".join(head + [b for b in body if b])


def setup(app):
    app.setup_extension("myst_parser")
    return register_page(app, "performance.md", functools.partial(performance_page, generated_dir(app)))
