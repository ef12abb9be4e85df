"""Render the results of ``experiments/reproduce.py`` into a markdown table
and a figure of the per-epoch curves.

::

    python experiments/render_results.py                 # writes results.md and curves.png
    python experiments/render_results.py --print         # also prints the table
    python experiments/render_results.py --readme README.md   # and puts it in the README

Reads every ``experiments/results/*.json`` whose ``kind`` is ``reproduce``
(and, for the AIS column, those whose ``kind`` is ``ais_row``, written by
``experiments/score_ais.py``) and writes ``experiments/results/results.md`` and
``experiments/results/curves.png`` (test ELBO per epoch, and validation ELBO
where the config holds a validation set). ``results.md`` holds two tables:
the headline (:func:`headline`: one row per paper model, pyrovae's best
row against the paper's figure) and every row (:func:`table`: ours, the
paper's, the gap, the budget, converged or not). With ``--readme`` the
headline also replaces what stands between the lines
``<!-- results-table:start -->`` and ``<!-- results-table:end -->`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README_MARKERS = ("<!-- results-table:start -->", "<!-- results-table:end -->")


def records_of_kind(results_dir, kind: str, pattern: str = "*.json"):
    """The results files ``pattern`` in ``results_dir`` whose ``kind`` is ``kind``, by file name;
    a file that cannot be read is skipped with a message."""
    for path in sorted(Path(results_dir).glob(pattern)):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        if isinstance(record, dict) and record.get("kind") == kind:
            yield record


def load_results(results_dir):
    out = []
    for record in records_of_kind(results_dir, "reproduce"):
        config = HERE.parent / record.get("config", "")
        if config.is_file():  # the config's header is the source of truth for the paper's figure
            sys.path.insert(0, str(HERE))
            from reproduce import paper_info

            record["paper"] = {k: v for k, v in paper_info(config).items() if k != "header"}
            if record["paper"]["nll"] is not None:
                record["gap"] = record["nll"] - record["paper"]["nll"]
        out.append(record)
    return out


def _error_gap(r):
    """Test error above the paper's, in percentage points (None without both)."""
    paper = (r.get("paper") or {}).get("error")
    if paper is None or r.get("test_error") is None:
        return None
    return 100 * (r["test_error"] - paper)


def load_ais_rows(results_dir) -> dict:
    """``{row name: record}`` of the ``ais_row`` files (``experiments/score_ais.py``)."""
    return {record["name"]: record for record in records_of_kind(results_dir, "ais_row", "ais_*.json")}


def _bdmc_gap(a) -> str:
    """The BDMC gap of the schedule AIS used: ``0.31 ± 0.04 (50 simulated points)``, or why there is none."""
    runs = [b for b in a.get("bdmc") or [] if b["num_steps"] == a["ais_settings"]["num_steps"]]
    check = a.get("length_check")
    if not runs and check:
        short, long = check["num_steps"]
        return (f"none (the model observes a transform of x); no certificate: AIS with {long} steps moves "
                f"{check['longer_minus_shorter']['mean']:+.2f} ± {check['longer_minus_shorter']['se']:.2f} "
                f"from {short} on {check['points']} test points")
    if not runs:
        return "none: " + (a.get("bdmc_refused") or "not run").split(";")[0]
    b = runs[-1]
    return f"{b['gap_mean']:.2f} ± {b['gap_se']:.2f} ({b['points']} simulated points)"


def ais_cell(a) -> str:
    """The headline's AIS cell: ``86.95 (IS 87.80) on 1000 points, BDMC gap 0.31`` in NLL, or ``weights not kept``."""
    if a is None:
        return "weights not kept"
    return f"{-a['ais']['mean']:.2f} (IS {-a['is']['mean']:.2f}) on {a['test_points']} points, BDMC gap {_bdmc_gap(a).split(' ')[0]}"


def ais_table(ais_rows) -> str:
    """IS against AIS on the same test points, per scored row, with the BDMC
    gap of the AIS schedule and the inference gaps (Cremer et al. 2018)."""
    lines = ["| row | test points | NLL by IS (K) | NLL by AIS | AIS − IS (log p(x), ± se) | AIS schedule "
             "| BDMC gap on simulated data | approximation gap | amortization gap | wall time | machine, date |",
             "|---|---:|---:|---:|---:|---|---|---:|---:|---|---|"]
    notes = []
    for name, a in sorted(ais_rows.items()):
        s = a["ais_settings"]
        g = a.get("gaps")
        gap = (lambda key: f"{g[key]['mean']:.2f} ± {g[key]['se']:.2f} ({g['points']} points)") if g else (lambda key: "—")
        seconds = sum(a.get(k, 0) for k in ("bdmc_seconds", "is_seconds", "ais_seconds", "gaps_seconds"))
        detail = f"BDMC {a.get('bdmc_seconds', 0) / 60:.0f}, IS {a.get('is_seconds', 0) / 60:.0f}, " \
                 f"AIS {a.get('ais_seconds', 0) / 60:.0f}, gaps {a.get('gaps_seconds', 0) / 60:.0f}"
        name_cell = f"`{name}`"
        if a.get("weights_note"):
            name_cell += f" [{len(notes) + 1}]"
            notes.append(f"[{len(notes) + 1}] `{name}`: {a['weights_note']}")
        certified = "" if a.get("certified") else ", not certified"
        lines.append(
            f"| {name_cell} | {a['test_points']} | {-a['is']['mean']:.2f} ({a['iw_samples']}) | {-a['ais']['mean']:.2f} "
            f"| {a['ais_minus_is']['mean']:+.2f} ± {a['ais_minus_is']['se']:.2f} "
            f"| {s['num_steps']} steps, {s['num_chains']} chains, {s['leapfrog_steps']} leapfrog, {s['schedule']} "
            f"| {_bdmc_gap(a)}{certified} | {gap('approximation_gap')} | {gap('amortization_gap')} "
            f"| {seconds / 60:.0f} min ({detail}) | {_machine({'machine': a['machine'], 'finished': a['date']})} |")
    text = "\n".join(lines)
    if notes:
        text += "\n\n" + "\n\n".join(notes)
    return text + ("\n\nNLL in nats per test point, on the first test points of each row. AIS is a stochastic lower "
                   "bound on log p(x) that tightens as its schedule grows; a BDMC gap (reverse AIS minus forward AIS "
                   "on data simulated from the model) below 0.5 nats certifies the schedule. The gaps split "
                   "log p(x) − ELBO into the approximation gap (the guide family's) and the amortization gap (the "
                   "encoder's).")


def gaps_figure(ais_rows, path) -> bool:
    """The mean inference gap of each scored row as a stacked bar
    (approximation + amortization), written to ``path``; False without gaps."""
    rows = {f"{name} ({a['gaps']['points']} points)": {k: a["gaps"][k]["mean"] for k in ("approximation_gap", "amortization_gap")}
            for name, a in sorted(ais_rows.items()) if a.get("gaps")}
    if not rows:
        return False
    from pyrovae.report.inference_plots import gaps_by_row_figure
    from pyrovae.report.plots import save_figure

    save_figure(gaps_by_row_figure(rows, title="Inference gap log p(x) − ELBO, split in two (nats per data point)"), path)
    return True


def ais_gap_figure(ais_rows, path) -> bool:
    """One panel per scored row: each test point's AIS − IS (nats) against
    its IS log p(x), with the mean; written to ``path``; False without points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, a) for name, a in sorted(ais_rows.items()) if (a.get("per_point") or {}).get("ais")]
    if not rows:
        return False
    fig, axes = plt.subplots(1, len(rows), figsize=(5.2 * len(rows), 3.8), squeeze=False)
    for ax, (name, a) in zip(axes.flat, rows):
        is_ll, ais_ll = a["per_point"]["is"], a["per_point"]["ais"]
        gap = [y - x for x, y in zip(is_ll, ais_ll)]
        ax.scatter(is_ll, gap, s=8, alpha=0.6, linewidths=0)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.axhline(sum(gap) / len(gap), color="C3", ls="--", lw=1.2,
                   label=f"mean {a['ais_minus_is']['mean']:+.2f} ± {a['ais_minus_is']['se']:.2f}")
        s = a["ais_settings"]
        ax.set_title(f"{name}: {len(gap)} test points, IS K={a['iw_samples']}, AIS T={s['num_steps']}", fontsize=9)
        ax.set_xlabel("IS log p(x), nats", fontsize=8)
        ax.set_ylabel("AIS − IS, nats (> 0: IS understates)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _machine(r) -> str:
    """``AMD EPYC (2 cores, 1 thread), 2026-12-02``: where and when a row ran."""
    m = r.get("machine") or {}
    cpu = (m.get("cpu") or "?").replace("(R)", "").replace(" Processor", "").strip()
    where = f"GPU {m['gpu']}" if m.get("gpu") else f"{cpu} ({m.get('cpu_count', '?')} cores, " \
        f"{m.get('torch_threads', '?')} thread{'s' if m.get('torch_threads') != 1 else ''})"
    return f"{where}, {(r.get('finished') or '?')[:10]}"


def _legs(r) -> int:
    return r.get("train_legs", 1)


def _fmt(value, fmt="{:.2f}", none="—"):
    return none if value is None else fmt.format(value)


def _budget(r) -> str:
    minutes = r["train_seconds"] / 60
    if r.get("budget_minutes") is not None:
        head = f"{r['budget_minutes']:g} min budget"
    elif r.get("epochs_limit") is not None:
        head = f"{r['epochs_limit']} epochs"
    else:
        head = "full plan"
    if _legs(r) > 1:
        return f"{head} for the last of {_legs(r)} legs: {r['epochs_run']} of {r['epochs_planned']} epochs, " \
               f"{minutes:.1f} min in all"
    return f"{head}: {r['epochs_run']} of {r['epochs_planned']} epochs, {minutes:.1f} min"


def _converged(r) -> str:
    if r.get("converged"):
        return "yes: early stopping" if r.get("stopped_by") == "early_stopping" else "yes: all planned epochs"
    why = {"budget": "no: cut by the budget", "epochs": "no: cut by --epochs"}.get(r.get("stopped_by"), "no")
    return why


def _notes(r):
    """What a reader must know about one row: overrides, a reduced evaluation, an unfinished warm-up."""
    out = []
    if r.get("overrides"):
        out.append("config overrides " + ", ".join(f"`{o}`" for o in r["overrides"]))
    note = (r.get("test") or {}).get("eval_note")
    if note:
        out.append(note)
    requested = (r.get("test") or {}).get("iw_samples_requested")
    if requested and requested != r["iw_samples"] and not note:
        out.append(f"evaluated with K={r['iw_samples']} instead of {requested}")
    summed = (r.get("test") or {}).get("summed_out")
    if summed:
        out.append(f"log p(x) with {', '.join(summed)} summed out: K={r['iw_samples']} samples of z for each class")
        if r.get("test_error") is not None:
            out.append(f"the test error is that of q(y|x), trained with {r.get('labelled_points')} labels")
    elif r["iw_samples"] < 5000 and not note:
        out.append(f"K={r['iw_samples']} (not the paper's 5000)")
    if r.get("test_points") and r.get("test_points") < 10000:
        out.append(f"only the first {r['test_points']} test points")
    last_beta = (r.get("curve") or [{}])[-1].get("beta")
    if last_beta is not None and last_beta < 1:
        out.append(f"KL warm-up unfinished: the last epoch trained at beta = {last_beta:.2f}")
    if r.get("eval_only"):
        out.append("evaluated by a second `--eval-only` pass over the saved run")
    return out


def _paper_figure(paper) -> str:
    if paper.get("error") is not None:
        text = f"{100 * paper['error']:.2f}% test error"
    elif paper.get("nll") is not None:
        text = f"{paper['nll']:.2f}"
    else:
        return "—"
    return text + (" (unverified)" if paper.get("verified") is False else "")


def _gap(r) -> str:
    if r.get("gap") is not None:
        return f"{r['gap']:+.2f}"
    error_gap = _error_gap(r)
    return "—" if error_gap is None else f"{error_gap:+.2f} points"


def _test_error(r) -> str:
    return "—" if r.get("test_error") is None else f"{100 * r['test_error']:.2f}%"


def table(records) -> str:
    """Every row: one line per results file, with notes below."""
    head = ("| config | paper | ours: NLL (K, test points) | test error | gap | test ELBO | active units "
            "| budget / epochs run | training finished | machine, date |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    notes = []
    for r in records:
        ours = f"{r['nll']:.2f} (K={r['iw_samples']}, {r['test_points']})"
        if _notes(r):
            ours += f" [{len(notes) + 1}]"
            notes.append(f"[{len(notes) + 1}] `{r['name']}`: " + "; ".join(_notes(r)) + ".")
        lines.append(
            f"| `{r['name']}` | {_paper_figure(r.get('paper') or {})} | {ours} | {_test_error(r)} | {_gap(r)} "
            f"| {r['elbo']:.2f} | {r['active_units']} / {r['latent_units']} | {_budget(r)} | {_converged(r)} "
            f"| {_machine(r)} |"
        )
    text = "\n".join(lines)
    if notes:
        text += "\n\n" + "\n\n".join(notes)  # one paragraph each in markdown
    machines = {(r["machine"]["cpu_count"], r["machine"]["cpu"], r["machine"].get("gpu"), r["machine"]["torch"]) for r in records}
    commits = {((r.get("git") or {}).get("commit") or "?")[:10] + ("+dirty" if (r.get("git") or {}).get("dirty") else "") for r in records}
    if machines:
        m = "; ".join(f"{c} CPU cores ({cpu}), {'GPU ' + gpu if gpu else 'no GPU'}, torch {t}" for c, cpu, gpu, t in sorted(machines, key=str))
        text += (f"\n\nNLL in nats (lower is better), IS with K importance samples on the test set; gap: ours minus "
                 f"the paper's (nats, or percentage points of test error). A leg is one `reproduce.py` run; `--resume` carries a row on in another leg. "
                 f"Machines: {m}. Code: {', '.join(sorted(commits))}.")
    return text


def paper_model(paper) -> str:
    """The paper model a row reproduces, from its config's ``paper_source``
    (without the evaluation's details)."""
    import re

    text = re.sub(r";\s*IS with K\s*=\s*\d+", "", paper.get("source") or "")
    return re.sub(r",\s*(Table \d+|MNIST)\b", "", text).strip()


def best_rows(records) -> list:
    """pyrovae's best row for each paper model: the lowest test error where
    the paper's figure is one, else the lowest NLL; in the order first seen."""
    groups = {}
    for r in records:
        paper = r.get("paper") or {}
        if paper.get("nll") is None and paper.get("error") is None:
            continue
        groups.setdefault(paper_model(paper), []).append(r)
    out = []
    for rows in groups.values():
        if (rows[0].get("paper") or {}).get("error") is not None:
            out.append(min(rows, key=lambda r: (r.get("test_error") is None, r.get("test_error") or 0, r["nll"])))
        else:
            out.append(min(rows, key=lambda r: r["nll"]))
    return out


def headline(records, ais_rows=None) -> str:
    """One row per paper model: the paper's figure and how it was checked,
    pyrovae's best row, the gap, K and test points, training time and
    epochs, the machine, and (with ``ais_rows``) the AIS cell (:func:`ais_cell`)."""
    ais = ais_rows is not None
    lines = ["| paper model | paper's figure (how it was checked) | pyrovae's best row | NLL (nats) | test error | gap "
             "| K, test points | training | machine, date |" + (" NLL by AIS (IS on the same points), BDMC gap |" if ais else ""),
             "|---|---|---|---:|---:|---:|---|---|---|" + ("---|" if ais else "")]
    for r in best_rows(records):
        paper = r["paper"]
        check = paper.get("check") or {True: "checked against the paper's text", False: "not checked"}.get(
            paper.get("verified"), "—")
        k = f"{r['iw_samples']} per class" if (r.get("test") or {}).get("summed_out") else f"{r['iw_samples']}"
        legs = f", {_legs(r)} legs" if _legs(r) > 1 else ""
        training = f"{r['train_seconds'] / 60:.0f} min{legs}, {r['epochs_run']} of {r['epochs_planned']} epochs"
        lines.append(
            f"| {paper_model(paper)} | {_paper_figure(paper).replace(' (unverified)', '')}, {check} "
            f"| `{r['name']}` | {r['nll']:.2f} | {_test_error(r)} | {_gap(r)} | {k}, {r['test_points']} "
            f"| {training} | {_machine(r)} |" + (f" {ais_cell(ais_rows.get(r['name']))} |" if ais else "")
        )
    return "\n".join(lines)


def curves_figure(records, path) -> bool:
    """One panel per result: the per-epoch -ELBO (test, and validation where
    the config holds one out) against epochs on a log axis that runs to the
    planned epochs, so a reader sees how much of the paper's schedule the
    budget allowed; the final IS NLL (star) and the paper's NLL (dotted)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if r.get("curve")]
    if not records:
        return False
    cols = 2 if len(records) > 1 else 1
    rows = math.ceil(len(records) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.6 * rows), squeeze=False)
    for ax, r in zip(axes.flat, records):
        epochs = [c["epoch"] for c in r["curve"]]
        marker = "." if len(epochs) <= 60 else None
        values, tail = [], []
        for key, sign, style, label in (("test_elbo", -1, "-", "test -ELBO"), ("val_loss", 1, "--", "validation -ELBO")):
            if any(key in c for c in r["curve"]):
                ys = [sign * c[key] if key in c else float("nan") for c in r["curve"]]
                ax.plot(epochs, ys, ls=style, marker=marker, lw=1.2, label=label)
                finite = [y for y in ys if y == y]
                values += finite
                tail += finite[len(finite) // 2:]  # the later half sets the top; early epochs may leave the view
        ax.scatter([epochs[-1]], [r["nll"]], color="k", marker="*", s=110, zorder=3,
                   label=f"IS NLL {r['nll']:.2f} (K={r['iw_samples']})")
        paper = (r.get("paper") or {}).get("nll")
        if paper is not None:
            ax.axhline(paper, color="C3", ls=":", lw=1.2, label=f"paper {paper:.2f}")
        planned = r.get("epochs_planned") or epochs[-1]
        ax.set_xscale("log")
        ax.set_xlim(0.8, max(planned, epochs[-1]) * 1.25)
        if planned > epochs[-1]:
            ax.axvspan(epochs[-1], planned, color="0.9", zorder=0, label="planned, not run")
        low = min(values + [r["nll"]] + ([paper] if paper is not None else []))
        high = max(tail + [r["nll"]])
        ax.set_ylim(low - 1.5, high + max(4.0, 0.35 * (high - low)))
        ax.set_title(f"{r['name']}: {len(epochs)} of {planned} epochs, {r.get('train_seconds', 0) / 60:.0f} min", fontsize=9)
        ax.set_xlabel("epoch (log scale)", fontsize=8)
        ax.set_ylabel("nats per test image", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5, loc="upper right")
    for ax in list(axes.flat)[len(records):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def put_in_readme(text: str, readme: Path) -> None:
    """Replace the table between ``README_MARKERS`` in ``readme`` by ``text``;
    a file without exactly one start marker followed by one end marker is
    left as it was and raises ``ValueError``."""
    start, end = README_MARKERS
    content = readme.read_text()
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise ValueError(f"{readme} needs one line {start} and, after it, one line {end} around the results "
                         f"table; add them where the table goes")
    head, rest = content.split(start)
    _, tail = rest.split(end)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--print", dest="show", action="store_true", help="print the table")
    p.add_argument("--readme", type=Path, help="also write the headline table between the results-table markers of this file")
    args = p.parse_args(argv)
    results_dir = Path(args.results_dir)
    records = load_results(results_dir)
    if not records:
        print(f"no reproduce results in {results_dir}", file=sys.stderr)
        return 1
    ais_rows = load_ais_rows(results_dir)
    top, text = headline(records, ais_rows or None), table(records)
    ais = f"\n## Importance sampling against AIS\n\n{ais_table(ais_rows)}\n" if ais_rows else ""
    (results_dir / "results.md").write_text(f"## Headline: pyrovae's best row for each paper model\n\n{top}\n\n"
                                            f"## Every row\n\n{text}\n{ais}")
    print(f"wrote {results_dir / 'results.md'}", file=sys.stderr)
    if ais_rows and gaps_figure(ais_rows, results_dir / "gaps.png"):
        print(f"wrote {results_dir / 'gaps.png'}", file=sys.stderr)
    if ais_rows and ais_gap_figure(ais_rows, results_dir / "is_vs_ais.png"):
        print(f"wrote {results_dir / 'is_vs_ais.png'}", file=sys.stderr)
    if curves_figure(records, results_dir / "curves.png"):
        print(f"wrote {results_dir / 'curves.png'}", file=sys.stderr)
    if args.readme is not None:
        try:
            put_in_readme(top, args.readme)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote the table into {args.readme}", file=sys.stderr)
    if args.show:
        print(top + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
