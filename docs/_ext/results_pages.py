"""Sphinx extension: the "Reproducing the literature" page, rendered from
``experiments/results/*.json`` at build time.

The results table and the per-epoch curves come from
``experiments/render_results.py`` (the same code that writes
``results.md``); the conditional-VAE and VAE-against-autoencoder sections
from the ``cvae_vs_vae`` and ``vae_vs_ae`` records. The page is Markdown
(MyST), because those tables are Markdown.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from experiment_modules import RESULTS, load
from rst import generated_dir, register_page
from sphinx.errors import ExtensionError


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
    lines = [
        "## The results table",
        "",
        ("Each row is one config in `experiments/configs/`, trained by `experiments/reproduce.py` and scored "
        "by importance sampling on the test set. The config's comment header names the paper, the settings "
        "it copies and the paper's figure."),
        "",
        render.table(records).replace("\n[", "\n\n["),  # one paragraph per note
        "",
        "## The curves",
        "",
        ("Test (and validation) −ELBO per epoch, the final IS NLL (star) and the paper's NLL (dotted); the grey "
        "band is the part of the paper's schedule the budget did not run."),
        "",
    ]
    if render.curves_figure(records, out_dir / "literature_curves.png"):
        lines += ["```{image} literature_curves.png", ":alt: per-epoch curves of every row", "```", ""]
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
        "| sample label accuracy |"),
        "|---|---:|---|---:|---:|---|---:|",
    ]
    figures = []
    for r in records:
        latent = r.get("latent_dim", "")
        epochs = r.get("epochs", {})
        lines.append(
            f"| `{r['_file']}` | {latent} | {epochs.get('cvae', '?')}, {epochs.get('vae', '?')} "
            f"| {r['nll_conditional']:.2f} | {r['nll_unconditional']:.2f} | {r['iw_samples']}, {r['test_points']} "
            f"| {100 * r['sample_label_accuracy']:.1f}% |"
        )
        png = RESULTS / (Path(r["_file"]).stem + "_class_samples.png")
        if png.exists():
            figures.append((r["_file"], copy_figure(png, out_dir)))
    lines.append("")
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
             "(point-mass guide, beta = 0)."), "", table, ""]
    png = RESULTS / "vae_vs_ae.png"
    if png.exists():
        lines += [f"```{{image}} {copy_figure(png, out_dir)}", ":alt: VAE against autoencoder", "```", ""]
    return "\n".join(lines)


def literature_page(out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    head = [
        "(literature)=",
        "",
        "# Reproducing the literature",
        "",
        ("Rendered from `experiments/results/*.json` when this site was built: every number below is read "
        "from a results file, never typed in. Rerun a row with "
        "`python experiments/reproduce.py experiments/configs/<row>.yaml` and rebuild the docs."),
        "",
    ]
    parts = [reproduce_section(out_dir), cvae_section(out_dir), vae_vs_ae_section(out_dir)]
    return "\n".join(head + [p for p in parts if p])


def setup(app):
    app.setup_extension("myst_parser")
    out_dir = generated_dir(app)
    return register_page(app, "literature.md", functools.partial(literature_page, out_dir))
