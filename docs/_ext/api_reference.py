"""Sphinx extension: the API reference page, written from
``pyrovae.__all__`` at build time.

The names are grouped into sections for the reader; a name exported in
``__all__`` but not placed in a group lands in "Other", so every public name
is documented, and a group naming something that is not exported stops the
build. The types those functions return or take (``Splits``, ``Evaluation``,
...) follow in a second part, from the modules that define them, and the
docstrings of the modules the reference points to in a third.
"""

from __future__ import annotations

import inspect

from rst import heading, register_page
from sphinx.errors import ExtensionError

#: the public API, by what a reader is looking for
GROUPS = (
    ("Configuration", "A run's settings: three flat dataclasses with a strict YAML/dict round trip.",
     ("load_config", "Config", "DataConfig", "ModelConfig", "TrainConfig")),
    ("Models", "The VAE and the registry of model families (``vae``, ``cvae``, ``m2``, ``hvae`` and yours).",
     ("VAE", "build_model", "register_model", "kl_scale", "observe")),
    ("Components", ("Base classes and registration decorators of the swappable parts; the registered ones are "
     "listed in :ref:`components`."),
     ("Prior", "Likelihood", "GuideFamily", "register_prior", "register_likelihood", "register_encoder",
      "register_decoder", "register_guide")),
    ("Data", "Loading, splitting and binarizing data sets.", ("load_data", "register_dataset")),
    ("Training", "Fitting a model with SVI and reading a run directory back.", ("train", "Trainer", "load_run")),
    ("Evaluation and inference", "Importance-sampled log-likelihoods, metrics, imputation and the latent space.",
     ("log_likelihood", "ais_log_likelihood", "bdmc", "inference_gaps", "evaluate", "impute", "draw_samples", "encode_data", "latent_probe")),
    ("Errors", "Every error pyrovae raises on bad input derives from :class:`~pyrovae.PyrovaeError`.",
     ("PyrovaeError", "ConfigError", "DataError", "CheckpointError", "RunDirError", "OutOfMemoryError", "TrainingDiverged")),
)

#: types that public functions take or return, documented where they are defined
SUPPORTING = (
    ("pyrovae.data.splits", "Splits", "class"),
    ("pyrovae.data.splits", "RowReader", "class"),
    ("pyrovae.infer.loglik", "ISResult", "class"),
    ("pyrovae.infer.ais", "AISResult", "class"),
    ("pyrovae.infer.ais", "BDMCResult", "class"),
    ("pyrovae.infer.gaps", "GapsResult", "class"),
    ("pyrovae.infer.evaluate", "Evaluation", "class"),
    ("pyrovae.infer.evaluate", "Summary", "class"),
    ("pyrovae.infer.iwae", "IWAE", "class"),
    ("pyrovae.infer.objectives", "check_sampling_order", "function"),
    ("pyrovae.infer.plates", "plate_nesting", "function"),
    ("pyrovae.infer.plates", "data_frame", "function"),
    ("pyrovae.data.prepare", "validation_size", "function"),
    ("pyrovae.infer.impute", "Imputation", "class"),
    ("pyrovae.infer.masks", "make_mask", "function"),
    ("pyrovae.infer.masks", "load_mask_file", "function"),
    ("pyrovae.components.likelihoods", "LocationScaleLikelihood", "class"),
    ("pyrovae.models.vae", "StochasticLayer", "class"),
    ("pyrovae.models.family", "LatentVariableModel", "class"),
    ("pyrovae.models.protocol", "PyroModel", "class"),
    ("pyrovae.models.protocol", "capability", "function"),
    ("pyrovae.models.protocol", "has_capability", "function"),
    ("pyrovae.models.protocol", "require_command", "function"),
    ("pyrovae.models.protocol", "MissingCapability", "class"),
    ("pyrovae.infer.enumerated", "EnumeratedObjective", "class"),
    ("pyrovae.training.validation", "validate", "function"),
    ("pyrovae.registry", "Registry", "class"),
    ("pyrovae.training.callbacks", "callbacks_from_config", "function"),
    ("pyrovae.report.figures", "EpochFigures", "class"),
    ("pyrovae.report.tensorboard", "TensorBoardCallback", "class"),
    ("pyrovae.training.strategy", "Strategy", "class"),
    ("pyrovae.training.strategy", "SingleProcess", "class"),
    ("pyrovae.training.strategy", "DataParallel", "class"),
    ("pyrovae.training.distributed", "Context", "class"),
    ("pyrovae.training.distributed", "init", "function"),
    ("pyrovae.infer.sharding", "point_shard", "function"),
    ("pyrovae.infer.sharding", "gather_points", "function"),
    ("pyrovae.infer.sharding", "block_shard", "function"),
    ("pyrovae.infer.sharding", "block_seed", "function"),
)

#: modules whose docstring the pages above point to (the contract of a model,
#: the callback protocol, ...): their docstrings only, no members
MODULES = (
    "pyrovae.models.base",
    "pyrovae.models.signatures",
    "pyrovae.data.binarize",
    "pyrovae.training.callbacks",
    "pyrovae.training.distributed",
    "pyrovae.training.precision",
    "pyrovae.training.determinism",
    "pyrovae.infer.plates",
    "pyrovae.rundir",
    "pyrovae.checkpoint_file",
    "pyrovae.loading",
    "pyrovae.atomic",
    "pyrovae.rng",
    "pyrovae.training.checkpoint",
    "pyrovae.training.validation",
    "pyrovae.training.checks",
    "pyrovae.infer.enumerated",
    "pyrovae.infer.psis",
    "pyrovae.infer.sharding",
    "pyrovae.models.protocol",
    "pyrovae.models.helpers",
    "pyrovae.validators",
)


def directive(qualified: str, obj) -> str:
    """The autodoc directive that documents ``obj`` under ``qualified``."""
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return f".. autoexception:: {qualified}\n   :show-inheritance:\n"
        inherits = "   :show-inheritance:\n" if obj.__bases__ != (object,) else ""
        return f".. autoclass:: {qualified}\n   :members:\n{inherits}"
    return f".. autofunction:: {qualified}\n"


def grouped_names(exported) -> list:
    listed = [name for _, _, names in GROUPS for name in names]
    unknown = [n for n in listed if n not in exported]
    if unknown:
        raise ExtensionError(f"API reference: {unknown} are grouped in docs/_ext/api_reference.py but not in pyrovae.__all__")
    other = [n for n in exported if n not in listed]
    return list(GROUPS) + ([("Other", "", tuple(other))] if other else [])


def api_page() -> str:
    import pyrovae

    # names in the summary tables resolve as the top-level ones they are
    out = [".. _api:", "", heading("API reference", "=", over=True), ".. currentmodule:: pyrovae", ""]
    out += [
        ("Everything below is importable from the top-level package (``pyrovae.__all__``, "
        f"{len(pyrovae.__all__)} names); the page is written from that list when the documentation is "
        "built. Shapes are written ``(N, *data_shape)``: N data points, each of the model's data shape."),
        "",
    ]
    for title, intro, names in grouped_names(pyrovae.__all__):
        out += [heading(title, "-"), intro, ""] if intro else [heading(title, "-")]
        out += [".. autosummary::", "   :nosignatures:", ""] + [f"   {n}" for n in names] + [""]
        out += [directive(f"pyrovae.{n}", getattr(pyrovae, n)) for n in names]
    out += [heading("Types the API takes and returns", "-"),
            ("Not exported at the top level, but handed to you or asked of you by the functions above, "
             "and the classes their documentation names."), ""]
    for module, name, _ in SUPPORTING:
        obj = getattr(__import__(module, fromlist=[name]), name)
        out.append(directive(f"{module}.{name}", obj))
    out += [heading("Modules the reference points to", "-"),
            "What these modules' docstrings say; their members are internal unless listed above.", ""]
    for module in MODULES:
        out += [heading(f"``{module}``", "~"), f".. automodule:: {module}", ""]
    return "\n".join(out)


def setup(app):
    return register_page(app, "api.rst", api_page)
