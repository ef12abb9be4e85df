"""The run configuration: three flat dataclasses (``data``, ``model``,
``train``) with a strict YAML/dict round trip and ``key=value`` overrides.

Unknown keys fail loudly with the valid choices, so a typo never goes
unnoticed. Component specs (``model.encoder``, ``train.optimizer``, ...)
are mappings ``{name: ..., <option>: <value>}`` whose options are checked
against the component's signature when it is built.
"""

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import yaml

from .config_values import as_spec, check_choice, check_keys, check_min, coerce, parse_yaml, read_yaml, set_path
from .errors import ConfigError

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "Config", "load_config"]

Spec = Dict[str, Any]


def _spec(name: str, **options) -> Spec:
    """A component-spec field; a bare name is accepted for it too."""
    return field(default_factory=lambda: {"name": name, **options}, metadata={"spec": True})


@dataclass
class DataConfig:
    """Where the data comes from and how it is prepared.

    :ivar name: data source: ``mnist``, ``fashion_mnist``, ``npy``, ``image_folder``, ``synthetic``.
    :ivar root: directory with a local copy (torchvision layout or ``mnist.pkl.gz``), and
        where downloads go (default ``~/.cache/pyrovae``).
    :ivar path: file or folder for ``npy`` (``.npy``/``.npz``) and ``image_folder``.
    :ivar download: try torchvision's download when no local copy is found.
    :ivar binarize: ``dynamic`` (resampled every epoch), ``static`` (once, fixed seed) or ``none``.
    :ivar binarize_seed: seed of static binarization, and of the validation and test binarization.
    :ivar quantize: map grey values in [0, 1] to integer levels 0..255 (categorical likelihood).
    :ivar val_size: training points held out for validation (0: train on all). null: the source's
        standard validation set (MNIST and Fashion-MNIST: their last 10,000 training points), else
        10% of the training points, at most 10,000.
    :ivar subset: use only ``subset`` training points (quick runs): the first ones, after the shuffle
        of ``split_seed``.
    :ivar split_seed: seed of the shuffle before the test set, the validation set and ``subset`` are
        taken, for data in no fixed order (``npy``, ``image_folder``, a source of your own), so that
        a file saved class by class is split evenly. MNIST and Fashion-MNIST keep the splits of the
        literature, whatever the seed. null: the stored order (how pyrovae 0.1.0 split an ``npy``
        file; its runs are read so).
    :ivar options: extra options of the data source (for example ``synthetic``'s ``num_points``, or
        ``npy``'s ``mmap: true`` to train on a memory-mapped float32 file larger than memory).
    :ivar labelled: keep the labels of only this many training points, the same number from every
        class, and mark the others' labels missing (-1): semi-supervised training (the ``m2``
        model). null keeps every label.
    :ivar labelled_seed: seed of the choice of labelled points (the same points in every run
        with this seed, whatever ``train.seed``).
    :ivar as_given: ``path`` and ``root`` as they were written, where a run's ``config.yaml``
        stores them made absolute (:meth:`~pyrovae.DataConfig.with_absolute_paths`), so that ``pyrovae evaluate``
        finds the data from any folder. A record for the reader; pyrovae reads ``path`` and ``root``.

    Example::

        >>> from pyrovae import DataConfig
        >>> DataConfig(name="synthetic", options={"num_points": 500}).binarize
        'dynamic'
        >>> DataConfig(binarize="sometimes")
        Traceback (most recent call last):
        ...
        pyrovae.errors.ConfigError: data.binarize must be one of dynamic, static, none, got 'sometimes'
    """

    name: str = "mnist"
    root: Optional[str] = None
    path: Optional[str] = None
    download: bool = True
    binarize: str = "dynamic"
    binarize_seed: int = 0
    quantize: bool = False
    val_size: Optional[int] = None
    subset: Optional[int] = None
    split_seed: Optional[int] = 0
    options: Dict[str, Any] = field(default_factory=dict)
    labelled: Optional[int] = None
    labelled_seed: int = 0
    as_given: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        check_choice("data.binarize", self.binarize, ("dynamic", "static", "none"))
        if self.val_size is not None:
            check_min("data.val_size", self.val_size, 0)
        if self.subset is not None:
            check_min("data.subset", self.subset, 1)
        if self.labelled is not None:
            check_min("data.labelled", self.labelled, 1)
        if self.quantize and self.binarize != "none":
            raise ConfigError("data.quantize needs data.binarize: none (levels come from grey values)")

    def with_absolute_paths(self) -> "DataConfig":
        """A copy whose relative ``path`` and ``root`` are made absolute against
        the current folder (``~`` expanded), with what was written kept in
        ``as_given``: what a run directory stores, so that commands run from
        another folder read the same data.

        Example::

            >>> import os
            >>> cfg = DataConfig(name="npy", path="digits.npy").with_absolute_paths()
            >>> cfg.path == os.path.join(os.getcwd(), "digits.npy"), cfg.as_given
            (True, {'path': 'digits.npy'})
        """
        changed, given = {}, dict(self.as_given)
        for key in ("path", "root"):
            value = getattr(self, key)
            if value and os.path.abspath(os.path.expanduser(value)) != value:
                changed[key] = os.path.abspath(os.path.expanduser(value))
                given[key] = value
        return dataclasses.replace(self, **changed, as_given=given) if changed else self


@dataclass
class ModelConfig:
    """The model and its components; each component is a spec ``{name: ..., <option>: ...}``.

    The default is the one-stochastic-layer model of Burda et al. (2015):
    784-200-200-50 with tanh, a Bernoulli likelihood and a Gaussian guide.

    :ivar name: the registered model (``pyrovae list`` shows them): ``vae``,
        or one registered with :func:`pyrovae.register_model`.
    :ivar options: keyword options of that model's factory.
    :ivar plugins: Python modules to import before the model is built, so
        that components and models registered outside pyrovae exist for
        ``pyrovae train``, ``evaluate`` and resume (the run's config.yaml
        keeps the list).
    :ivar latent_dim: size of the latent z (of z1, the bottom layer, with a ``hierarchy``).
    :ivar encoder: the network from a data point to the guide's parameters,
        ``(*batch, *data_shape) -> (*batch, guide features)``.
    :ivar decoder: the network from z to the likelihood's parameters,
        ``(*batch, latent_dim) -> (*batch, *likelihood parameter shape)``.
    :ivar prior: p(z), over the top latent layer.
    :ivar likelihood: p(x | z), the distribution of a data point given the decoder's output.
    :ivar guide: the family of q(z | x) that the encoder's output parameterizes.
    :ivar hierarchy: stochastic layers above z1, bottom first (Burda et al.'s
        two-layer models); each entry is ``{latent_dim, encoder, decoder, guide}``
        (empty: one stochastic layer).

    Example::

        >>> from pyrovae import ModelConfig
        >>> ModelConfig(latent_dim=8, prior="mog").prior    # a bare name becomes a spec
        {'name': 'mog'}
        >>> ModelConfig(hierarchy=[{"latent_dim": 4}]).hierarchy[0]["encoder"]
        {'name': 'mlp', 'hidden': [100, 100], 'activation': 'tanh'}
    """

    name: str = "vae"
    options: Dict[str, Any] = field(default_factory=dict)
    plugins: List[str] = field(default_factory=list)
    latent_dim: int = 50
    encoder: Spec = _spec("mlp", hidden=[200, 200], activation="tanh")
    decoder: Spec = _spec("mlp", hidden=[200, 200], activation="tanh")
    prior: Spec = _spec("standard_normal")
    likelihood: Spec = _spec("bernoulli")
    guide: Spec = _spec("normal")
    hierarchy: List[Dict[str, Any]] = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"model.name must be the name of a registered model, got {self.name!r}")
        if not isinstance(self.options, dict):
            raise ConfigError(f"model.options must be a mapping of the model's options, got {self.options!r}")
        if not isinstance(self.plugins, list) or not all(isinstance(m, str) and m for m in self.plugins):
            raise ConfigError(f"model.plugins must be a list of Python module names, got {self.plugins!r}")
        check_min("model.latent_dim", self.latent_dim, 1)
        for key in ("encoder", "decoder", "prior", "likelihood", "guide"):
            setattr(self, key, as_spec(f"model.{key}", getattr(self, key)))
        self.hierarchy = [_layer_spec(i, layer) for i, layer in enumerate(self.hierarchy)]


#: keys of one entry of ``model.hierarchy`` and their defaults
LAYER_DEFAULTS = {
    "latent_dim": None,
    "encoder": {"name": "mlp", "hidden": [100, 100], "activation": "tanh"},
    "decoder": {"name": "mlp", "hidden": [100, 100], "activation": "tanh"},
    "guide": {"name": "normal"},
}


def _layer_spec(index: int, layer: Any) -> Dict[str, Any]:
    """Check one stochastic layer above z1: ``{latent_dim, encoder, decoder, guide}``."""
    where = f"model.hierarchy[{index}]"
    if not isinstance(layer, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(LAYER_DEFAULTS)}, got {layer!r}")
    check_keys(where, layer, LAYER_DEFAULTS)
    out = {**LAYER_DEFAULTS, **layer}
    check_min(f"{where}.latent_dim", out["latent_dim"], 1)
    for key in ("encoder", "decoder", "guide"):
        out[key] = as_spec(f"{where}.{key}", out[key])
    return out


#: the values ``train.precision`` takes (see :mod:`pyrovae.training.precision`)
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """How the model is fitted.

    :ivar epochs: passes over the training set.
    :ivar batch_size: data points per step; with partly labelled data (``data.labelled``) and a
        model that sums out missing labels (``m2``), unlabelled points per step.
    :ivar labelled_batch_size: labelled points added to every step of such a model (null:
        ``batch_size``); they are drawn again and again, so a few labels are seen every step.
    :ivar objective: ``{name: elbo|meanfield|iwae, num_particles: K, vectorize_particles: bool}``.
    :ivar optimizer: ``{name: adam|clipped_adam|rmsprop|sgd, lr: ..., ...}``.
    :ivar lr_schedule: ``{name: constant|exponential|step|cosine, ...}``, stepped every epoch.
    :ivar grad_clip: clip the global gradient norm to this value (null: off).
    :ivar beta: weight of the KL term (0 with the delta guide: a plain autoencoder).
    :ivar kl_schedule: how beta evolves: ``{name: constant}``, ``{name: linear, warmup_epochs: E}``
        (KL warm-up) or ``{name: cyclical, cycle_epochs: E, ramp_fraction: f}``.
    :ivar patience: early stopping after this many epochs without a better validation loss.
    :ivar device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    :ivar seed: seeds parameters, data order, binarization and sampling.
    :ivar progress: show a progress bar (the one summary line per epoch is shown either way).
    :ivar eval_batch_size: batch size of the validation pass.
    :ivar validate_model: run Pyro's argument validation during training (slower).
    :ivar precision: ``fp32``, or ``bf16``: the layers' matrix products in bf16 during training, with
        fp32 weights, activations, log-densities and loss (:mod:`pyrovae.training.precision`); refused
        on a device without bf16 matrix units.
    :ivar skip_nonfinite: skip (with a warning) a batch whose loss or gradient norm is NaN/inf instead of
        stopping (the gradient norm is then computed every step).
    :ivar sample_every: also write reconstruction and sample PNGs to ``RUN_DIR/figures/epoch-N/``
        every N epochs (0: only the final ones in the run directory).
    :ivar threads: CPU threads for torch while training: all of ``pyrovae train``, and
        :meth:`Trainer.fit <pyrovae.Trainer.fit>` (so :func:`pyrovae.train`), which restores the
        caller's setting afterwards (null: torch's default, one per core). One is the default: these small networks gain little from a second thread, and on a
        machine where other jobs run, two threads can be ten times slower than one.
    :ivar tensorboard: log scalars every epoch, and sample and reconstruction images every
        ``sample_every`` epochs (5 when 0), to ``RUN_DIR/tensorboard`` (``pip install -e '.[tensorboard]'``).
    :ivar deterministic: torch's deterministic kernels while training (cuDNN's deterministic
        convolutions, no cuDNN benchmarking, a fixed cuBLAS workspace), so that a run cut and resumed
        on a GPU equals an uninterrupted one bit for bit; on a CPU training is deterministic
        either way (:mod:`pyrovae.training.determinism`).

    Example::

        >>> from pyrovae import TrainConfig
        >>> TrainConfig(objective={"name": "iwae", "num_particles": 5}, optimizer="sgd").optimizer
        {'name': 'sgd'}
        >>> TrainConfig().objective
        {'name': 'elbo', 'num_particles': 1}
    """

    epochs: int = 30
    batch_size: int = 100
    labelled_batch_size: Optional[int] = None
    objective: Spec = _spec("elbo", num_particles=1)
    optimizer: Spec = _spec("adam", lr=1e-3)
    lr_schedule: Spec = _spec("constant")
    grad_clip: Optional[float] = None
    beta: float = 1.0
    kl_schedule: Spec = _spec("constant")
    patience: Optional[int] = None
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    eval_batch_size: int = 1000
    validate_model: bool = False
    precision: str = "fp32"
    skip_nonfinite: bool = False
    sample_every: int = 0
    tensorboard: bool = False
    threads: Optional[int] = 1
    deterministic: bool = False

    def __post_init__(self):
        check_min("train.epochs", self.epochs, 0)
        check_min("train.batch_size", self.batch_size, 1)
        if self.labelled_batch_size is not None:
            check_min("train.labelled_batch_size", self.labelled_batch_size, 1)
        check_min("train.eval_batch_size", self.eval_batch_size, 1)
        check_min("train.sample_every", self.sample_every, 0)
        if self.threads is not None:
            check_min("train.threads", self.threads, 1)
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ConfigError(f"train.beta must be a finite number >= 0, got {self.beta}")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise ConfigError(f"train.grad_clip must be positive, got {self.grad_clip}")
        if self.patience is not None:
            check_min("train.patience", self.patience, 1)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be {' or '.join(PRECISIONS)}, got {self.precision!r}")
        for key in ("objective", "optimizer", "lr_schedule", "kl_schedule"):
            setattr(self, key, as_spec(f"train.{key}", getattr(self, key)))
        lr = self.optimizer.get("lr", 1.0)
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"train.optimizer.lr must be a positive finite number, got {lr!r}")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass
class Config:
    """The whole run configuration: ``data`` (:class:`DataConfig`), ``model``
    (:class:`ModelConfig`) and ``train`` (:class:`TrainConfig`).

    Example::

        >>> from pyrovae import Config
        >>> cfg = Config.from_dict({"model": {"latent_dim": 8}, "train": {"epochs": 3}})
        >>> cfg.model.latent_dim, cfg.train.epochs, cfg.data.name     # the rest are defaults
        (8, 3, 'mnist')
        >>> print(cfg.to_yaml().splitlines()[0])
        data:
        >>> cfg.override(["model.prior={name: mog, num_components: 5}"]).model.prior
        {'name': 'mog', 'num_components': 5}
        >>> Config.from_dict(Config().to_dict()) == Config()       # a lossless round trip
        True
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # -- conversions ----------------------------------------------------
    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "Config":
        """Build from a nested dict; missing keys take defaults, unknown keys fail."""
        d = {} if d is None else d
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping with sections {list(SECTIONS)}, got {type(d).__name__}")
        check_keys("config", d, SECTIONS)
        return cls(**{name: _section_from_dict(name, d.get(name) or {}) for name in SECTIONS})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: Union[str, os.PathLike]) -> "Config":
        return cls.from_dict(read_yaml(path))

    def to_yaml(self, path: Optional[Union[str, os.PathLike]] = None) -> str:
        """The config as YAML text; also written to ``path`` if given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def override(self, assignments: List[str]) -> "Config":
        """A new config with ``section.key[.subkey]=value`` assignments applied.

        Values are parsed as YAML: ``3``, ``1e-3``, ``true``, ``null``,
        ``[200, 200]`` and ``{name: vamp, num_components: 50}`` all work.
        """
        d = self.to_dict()
        for item in assignments:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r} must look like section.key=value")
            try:
                value = parse_yaml(text)
            except yaml.YAMLError as e:
                raise ConfigError(f"override {item!r}: value does not parse as YAML: {e}") from None
            set_path(d, key.strip().split("."), value, item)
        return Config.from_dict(d)


def load_config(source: Any = None, overrides: Optional[List[str]] = None) -> Config:
    """A :class:`Config` from ``None`` (defaults), a dict, a YAML path or a
    Config, with ``section.key=value`` ``overrides`` applied (values parsed as YAML).

    :raises ConfigError: for an unknown key (the message names the valid
        ones), a value of the wrong type, or an unreadable file.

    Example::

        >>> import pyrovae
        >>> cfg = pyrovae.load_config({"train": {"epochs": 3}}, overrides=["model.latent_dim=8"])
        >>> cfg.train.epochs, cfg.model.latent_dim
        (3, 8)
        >>> pyrovae.load_config({"train": {"epoch": 3}})
        Traceback (most recent call last):
        ...
        pyrovae.errors.ConfigError: unknown key 'epoch' in train. Did you mean 'epochs'? Valid keys: ...
    """
    if source is None:
        cfg = Config()
    elif isinstance(source, Config):
        cfg = source
    elif isinstance(source, dict):
        cfg = Config.from_dict(source)
    elif isinstance(source, (str, os.PathLike)):
        cfg = Config.from_yaml(source)
    else:
        raise ConfigError(f"cannot read a config from {type(source).__name__}; give a dict, a YAML path or a Config")
    return cfg.override(overrides) if overrides else cfg


# -- sections from dicts -------------------------------------------------


def _section_from_dict(name: str, d: Any):
    cls = SECTIONS[name]
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise ConfigError(f"config section {name!r} must be a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    check_keys(name, d, hints)
    specs = {f.name for f in dataclasses.fields(cls) if f.metadata.get("spec")}
    # spec fields are checked by _as_spec in __post_init__
    return cls(**{k: v if k in specs else coerce(f"{name}.{k}", v, hints[k]) for k, v in d.items()})
