"""Sphinx extension: the "Reproducing the literature" page, rendered from
``experiments/results/*.json`` at build time.

The page opens with the headline table (pyrovae's best row for each paper
model), then every row and the per-epoch curves, all from
``experiments/render_results.py`` (the same code that writes
``results.md``); the conditional-VAE and VAE-against-autoencoder sections
come from the ``cvae_vs_vae`` and ``vae_vs_ae`` records. Hand-written notes
on what the rows show live in ``docs/_notes/literature/<section>.md`` and
follow their section. The page is Markdown (MyST), because those tables
are Markdown.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from experiment_modules import RESULTS, load
from rst import generated_dir, register_page, wide
from sphinx.errors import ExtensionError

NOTES = Path(__file__).resolve().parents[1] / "_notes" / "literature"


def notes(name: str) -> str:
    """The hand-written notes ``docs/_notes/literature/<name>.md`` ('' if there are none)."""
    path = NOTES / f"{name}.md"
    return path.read_text().strip() + "\n" if path.exists() else ""


def records_of_kind(kind: str) -> list[dict]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("kind") == kind:
            record["_file"] = path.name
            out.append(record)
    return out


def copy_figure(source: Path, out_dir: Path) -> str:
    """Copy a PNG from the results folder next to the page; its new name."""
    target = out_dir / source.name
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    return target.name


def reproduce_section(out_dir: Path) -> str:
    render = load("render_results")
    records = render.load_results(RESULTS)
    if not records:
        raise ExtensionError(f"literature page: no 'reproduce' results in {RESULTS}")
    every = render.table(records).split("\n\n")  # the table, then its notes
    lines = [
        "## Headline: pyrovae's best row for each paper model",
        "",
        ("Each paper model's best pyrovae row against the paper's figure: NLL in nats on the test set by "
         "importance sampling with K samples (lower is better), and for M2 the test error of the classifier "
         "q(y|x). The gap is ours minus the paper's, in nats or in percentage points of test error. Training "
         "time is in minutes on one CPU thread; a leg is one `reproduce.py` run, and `--resume` carries a row "
         "on in another leg."),
        "",
        wide(render.headline(records, render.load_ais_rows(RESULTS) or None)),
        "",
        "## Every row",
        "",
        ("Each row is one config in `experiments/configs/`, trained by `experiments/reproduce.py` and scored "
         "by importance sampling on the test set. The config's comment header names the paper, the settings "
         "it copies and the paper's figure."),
        "",
        wide(every[0]),
        "\n\n".join(every[1:]),  # the notes below the table, one paragraph each
        "",
        "## The curves",
        "",
        ("Test (and validation) −ELBO per epoch, the final IS NLL (star) and the paper's NLL (dotted); the grey "
         "band is the part of the paper's schedule the budget did not run."),
        "",
    ]
    if render.curves_figure(records, out_dir / "literature_curves.png"):
        lines += ["```{image} literature_curves.png", ":alt: per-epoch curves of every row", "```", ""]
    lines += [notes("rows")]
    return "\n".join(lines)


def cvae_section(out_dir: Path) -> str:
    records = records_of_kind("cvae_vs_vae")
    if not records:
        return ""
    lines = [
        "## The conditional VAE against a VAE",
        "",
        ("`experiments/cvae_vs_vae.py` trains the `cvae` and the `vae` of the same config (same networks, "
        "latent size and epochs) and scores −log p(x | y) and −log p(x) on the test set; the sample label "
        "accuracy is the share of class-conditional samples that a separate MLP classifier labels as the "
        "class they were drawn for."),
        "",
        ("| results file | latent | epochs (cvae, vae) | cvae: −log p(x \\| y) | vae: −log p(x) | K, test points "
        "| sample label accuracy | machine, date |"),
        "|---|---:|---|---:|---:|---|---:|---|",
    ]
    figures = []
    for r in records:
        latent = r.get("latent_dim", "")
        epochs = r.get("epochs", {})
        lines.append(
            f"| `{r['_file']}` | {latent} | {epochs.get('cvae', '?')}, {epochs.get('vae', '?')} "
            f"| {r['nll_conditional']:.2f} | {r['nll_unconditional']:.2f} | {r['iw_samples']}, {r['test_points']} "
            f"| {100 * r['sample_label_accuracy']:.1f}% | {(r.get('machine') or {}).get('cpu', '?')}, "
            f"{(r.get('started') or '?')[:10]} |"
        )
        png = RESULTS / (Path(r["_file"]).stem + "_class_samples.png")
        if png.exists():
            figures.append((r["_file"], copy_figure(png, out_dir)))
    lines += ["", notes("cvae_vs_vae")]
    for name, image in figures:
        lines += [f"```{{figure}} {image}", f":alt: class-conditional samples of {name}", ":width: 70%", "",
                  f"Class-conditional samples, `{name}`: one row per digit, a column shares z.", "```", ""]
    return "\n".join(lines)


def vae_vs_ae_section(out_dir: Path) -> str:
    path = RESULTS / "vae_vs_ae.json"
    if not path.exists():
        return ""
    record = json.loads(path.read_text())
    table = load("vae_vs_ae").table(record["results"], record["reference"], record["epochs"])
    lines = ["## A VAE against a plain autoencoder", "",
             ("`experiments/vae_vs_ae.py`: the same networks trained as a VAE and as an autoencoder "
             f"(point-mass guide, beta = 0). Run on {record.get('date', 'a date not recorded')} on "
             f"{record.get('cpu', 'a machine not recorded')}, one thread."), "", table, "", notes("vae_vs_ae")]
    png = RESULTS / "vae_vs_ae.png"
    if png.exists():
        lines += [f"```{{image}} {copy_figure(png, out_dir)}", ":alt: VAE against autoencoder", "```", ""]
    return "\n".join(lines)


def ais_section(out_dir: Path) -> str:
    """IS against AIS on the scored rows (``ais_*.json`` of ``experiments/score_ais.py``), the BDMC
    gap that certifies each AIS schedule, the inference gaps and their figure."""
    render = load("render_results")
    rows = render.load_ais_rows(RESULTS)
    if not rows:
        return ""
    every = render.ais_table(rows).split("\n\n")
    lines = [
        "## Importance sampling against AIS",
        "",
        ("`experiments/score_ais.py` scores a trained row on its first test points by importance sampling "
         "(K = 5000, as the table above) and by annealed importance sampling (`pyrovae.ais_log_likelihood`), "
         "after a BDMC sweep (`pyrovae.bdmc`) on data simulated from the same model picks the shortest AIS "
         "schedule whose sandwich gap is within 0.5 nats. The gaps (`pyrovae.inference_gaps`) split the "
         "inference gap log p(x) − ELBO into its approximation and amortization parts."),
        "",
        wide(every[0]),
        "\n\n".join(every[1:]),
        "",
    ]
    if render.ais_gap_figure(rows, out_dir / "literature_is_vs_ais.png"):
        lines += ["```{image} literature_is_vs_ais.png", ":alt: AIS minus IS for each test point of each scored row",
                  "```", ""]
    if render.gaps_figure(rows, out_dir / "literature_gaps.png"):
        lines += ["```{image} literature_gaps.png", ":alt: the inference gap of each scored row, split in two", "```", ""]
    lines += [notes("ais")]
    return "\n".join(lines)


def literature_page(out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    head = [
        "(literature)=",
        "",
        "# Reproducing the literature",
        "",
        ("pyrovae trains the models of Burda et al. (2015), Tomczak & Welling (2018) and Kingma et al. (2014) "
        "from configs in `experiments/configs/` and scores them as the papers do. The tables and the curves are "
        "rendered from `experiments/results/*.json` when this site was built; the notes under them are written "
        "by hand. Rerun a row with `python experiments/reproduce.py experiments/configs/<row>.yaml` and rebuild "
        "the docs."),
        "",
    ]
    parts = [reproduce_section(out_dir), ais_section(out_dir), cvae_section(out_dir), vae_vs_ae_section(out_dir), notes("commands")]
    return "\n".join(head + [p for p in parts if p])


def setup(app):
    app.setup_extension("myst_parser")
    out_dir = generated_dir(app)
    return register_page(app, "literature.md", functools.partial(literature_page, out_dir))
