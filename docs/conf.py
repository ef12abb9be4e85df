"""Sphinx configuration of the pyrovae documentation.

Build (offline, warnings are errors)::

    pip install -e ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

The reference pages (API, components, command line, configuration) and the
pages rendered from experiment results are written by the small extensions
in ``docs/_ext`` when the build starts; the gallery in ``docs/examples`` is
run by sphinx-gallery.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

# The examples train small models in this process: one thread, no progress bars.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch

torch.set_num_threads(1)

import pyrovae

project = "pyrovae"
author = "the pyrovae authors"
copyright = "the pyrovae authors"
release = pyrovae.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "api_reference",
    "registry_reference",
    "cli_reference",
    "config_reference",
    "results_pages",
    "performance_page",
    "protocol_tables",
]

# _notes: hand-written notes that the results pages include (docs/_ext/results_pages.py, performance_page.py)
exclude_patterns = ["_build", "_notes", "examples", "auto_examples/*.ipynb", "auto_examples/*.py"]
templates_path = []
html_static_path = ["_static"]
html_css_files = ["pyrovae.css"]

html_theme = "furo"
html_title = f"pyrovae {release}"
html_theme_options = {
    "sidebar_hide_name": False,
    "navigation_with_keys": True,
}

# -- autodoc ---------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# types only for the parameters a docstring documents (no bare "source (Any)" lists)
autodoc_typehints_description_target = "documented"
autodoc_typehints_format = "short"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
autosummary_generate = False
add_module_names = False
# every cross-reference must resolve: a broken one fails the -W build
nitpicky = True
# External names only: the build is offline, so no intersphinx inventory can be
# fetched for them. pyrovae's own names are never ignored here.
nitpick_ignore_regex = [
    # torch types in docstrings, type hints and "Bases:" (torch.Tensor, torch.dtype, nn.Module, DDP)
    ("py:class", r"torch\..*"),
    # numpy types in type hints (numpy.memmap)
    ("py:class", r"numpy\..*"),
]

# -- sphinx-gallery ----------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    # only plot_*.py run; the torchrun example is shown, never executed
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
    "capture_repr": ("_repr_html_",),
    "matplotlib_animations": False,
    # pyrovae.report.plots makes figures without pyplot; figure_scraper shows them
    "image_scrapers": ("matplotlib", "figure_scraper.scrape_figures"),
    "reset_modules": ("matplotlib",),
    "show_signature": False,
}
