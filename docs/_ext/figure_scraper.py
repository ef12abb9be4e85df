"""A sphinx-gallery image scraper for matplotlib figures made without pyplot.

:mod:`pyrovae.report.plots` returns :class:`matplotlib.figure.Figure` objects
that pyplot does not know about (no global state), so sphinx-gallery's own
matplotlib scraper does not see them. This scraper shows every such figure
that a code block left in a variable of the example, once, in the order the
variables were first assigned.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from matplotlib.figure import Figure
from sphinx_gallery.scrapers import figure_rst

#: key in sphinx-gallery's per-example ``block_vars`` for the figures already shown
#: (the objects themselves, so an id is never reused while the example runs)
SHOWN = "pyrovae_figures_shown"


def scrape_figures(block, block_vars, gallery_conf, **kwargs) -> str:
    shown = block_vars.setdefault(SHOWN, [])
    figures = [v for v in block_vars["example_globals"].values()
               if isinstance(v, Figure) and not any(v is s for s in shown)]
    paths = []
    for fig, path in zip(figures, block_vars["image_path_iterator"]):
        path = PurePosixPath(path)
        fig.savefig(str(path), dpi=fig.dpi)
        shown.append(fig)
        paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"]) if paths else ""
