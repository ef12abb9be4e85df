"""Latent-space computations shared by plots, ``sample``, ``encode``,
imputation and the probes: seeded draws, codes of a data set, and the
latent points that traversals, interpolations and the 2-D manifold decode.

Everything returns tensors; nothing here draws or writes files.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from ..errors import ConfigError, DataError
from ..validators import positive_int
from ..infer.seeds import seeded
from ..models.base import check_field_names, model_device, model_fields, model_name
from ..models.protocol import capability, has_capability

__all__ = [
    "draw_samples",
    "class_labels",
    "encode_data",
    "prior_draws",
    "prior_quantiles",
    "latent_activity",
    "traversal_codes",
    "interpolation_codes",
    "manifold_codes",
]


@torch.no_grad()
def draw_samples(vae, n: int, seed: Optional[int] = 0, mean: bool = True, **fields: torch.Tensor) -> torch.Tensor:
    """``n`` new data points ``(n, *data_shape)`` from p(z) p(x|z), the same
    for the same ``seed``. ``mean=True`` gives E[x|z] (what one looks at),
    ``mean=False`` a draw from p(x|z). ``fields`` (``y=labels`` ``(n,)`` for a
    conditional model) go to the model's ``sample``. Needs the model's
    ``sample(n, mean)`` capability (a :class:`~pyrovae.ConfigError` says so when it has none).

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 8, 8))
        >>> samples = pyrovae.draw_samples(vae, 16, seed=0)
        >>> samples.shape
        torch.Size([16, 1, 8, 8])
        >>> torch.equal(samples, pyrovae.draw_samples(vae, 16, seed=0))   # the same seed, the same samples
        True
        >>> pyrovae.draw_samples(vae, 16, seed=0, mean=False).unique()    # draws from the Bernoulli
        tensor([0., 1.])
        >>> cvae = pyrovae.build_model(pyrovae.load_config({"model": {"name": "cvae"}}).model, (1, 8, 8))
        >>> pyrovae.draw_samples(cvae, 3, y=torch.tensor([7, 7, 7])).shape   # three samples of class 7
        torch.Size([3, 1, 8, 8])
    """
    n = positive_int(n, "the number of samples", error=DataError)
    sample = capability(vae, "sample", "drawing samples")
    if fields:
        check_field_names(vae, list(fields), "drawing samples")
    with seeded(seed, getattr(vae, "device", None)):
        return sample(n, mean=mean, **fields)


def class_labels(vae, label: int, n: int) -> torch.Tensor:
    """``n`` copies of the class ``label`` ``(n,)``, for a model conditioned
    on class labels (the ``num_classes`` capability); a clear error for any
    other model or a label outside 0..C-1."""
    if "y" not in model_fields(vae) or not has_capability(vae, "num_classes"):
        raise ConfigError(
            f"--label needs a model conditioned on class labels (a field y and the num_classes capability); model {model_name(vae)!r} takes "
            f"the field(s) {', '.join(model_fields(vae))}"
        )
    if not 0 <= label < vae.num_classes:
        raise DataError(f"--label {label} is outside the model's classes 0..{vae.num_classes - 1}")
    return torch.full((n,), int(label), dtype=torch.long, device=model_device(vae))


@torch.no_grad()
def encode_data(vae, x: torch.Tensor, batch_size: int = 1000, num_samples: int = 64, seed: Optional[int] = 0,
                **fields: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The mean and the standard deviation of q(z|x) for every point of ``x``.

    :param vae: a model with the ``encode(x)`` capability (q(z|x) as a
        distribution); a model without it gets a :class:`ConfigError`.
    :param torch.Tensor x: data ``(N, *data_shape)``.
    :param int batch_size: points encoded at once.
    :param int num_samples: draws for a Monte Carlo estimate when the guide
        has no closed-form mean or standard deviation (a flow).
    :param fields: the model's other batch fields (``y=labels``), each
        ``(N, ...)``, checked like :func:`~pyrovae.log_likelihood`'s and
        passed to ``encode`` where its signature names them.
    :returns: ``{"mean": (N, latent_dim), "scale": (N, latent_dim)}`` on the CPU;
        ``scale`` is 0 for a point-mass (delta) guide.

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 8, 8))
        >>> x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))      # 5 binary 8x8 images
        >>> codes = pyrovae.encode_data(vae, x)
        >>> codes["mean"].shape, codes["scale"].shape
        (torch.Size([5, 2]), torch.Size([5, 2]))
    """
    from ..infer.fields import accepted_fields, chunk_sizes, chunks, data_fields

    encode = capability(vae, "encode", "encoding data")
    if isinstance(x, torch.Tensor) and x.dim() > 0 and len(x) == 0:  # nothing to encode: empty codes
        empty = torch.zeros(0, capability(vae, "latent_dim", "encoding data", default=0))
        return {"mean": empty, "scale": empty}
    data = data_fields(vae, x, fields, "encode_data", "data to encode", check_values=False)
    device = getattr(vae, "device", x.device)
    means, scales = [], []
    sizes = chunk_sizes(len(x), batch_size)
    with seeded(seed, device):
        for _, chunk in chunks(data, sizes, device):
            q = encode(chunk["x"], **accepted_fields(encode, chunk))
            try:
                mean, scale = q.mean, q.stddev
            except NotImplementedError:
                draws = q.sample((num_samples,))
                mean, scale = draws.mean(0), draws.std(0)
            means.append(mean.cpu())
            scales.append(scale.cpu())
    return {"mean": torch.cat(means), "scale": torch.cat(scales)}


@torch.no_grad()
def prior_draws(vae, n: int) -> torch.Tensor:
    """``n`` codes ``(n, latent_dim)`` from the prior, in the space the
    model's ``decode_mean`` reads: its ``prior_draws`` capability."""
    return capability(vae, "prior_draws", "codes from the prior (figures of the latent space)")(n)


@torch.no_grad()
def prior_quantiles(vae, levels: torch.Tensor, num_draws: int = 4000, seed: Optional[int] = 0) -> torch.Tensor:
    """Per-dimension quantiles at ``levels`` (in (0, 1)) of the marginals
    of the latent the decoder reads, estimated from ``num_draws`` seeded
    :func:`prior_draws`, so they exist for every prior. Returns
    ``(len(levels), latent_dim)``."""
    with seeded(seed, model_device(vae)):
        draws = prior_draws(vae, num_draws).cpu()
    return torch.quantile(draws, levels.to(draws.dtype), dim=0)


def latent_activity(codes: torch.Tensor) -> torch.Tensor:
    """The variance across data points of each dimension of the codes
    ``(N, latent_dim)`` (Burda et al. 2015 call a dimension *active* when
    this exceeds 0.01). Returns ``(latent_dim,)``."""
    if len(codes) < 2:
        return torch.zeros(codes.shape[-1])
    return codes.var(0)


def traversal_codes(base: torch.Tensor, values: torch.Tensor, dims) -> torch.Tensor:
    """Latent traversals: for each ``d`` in ``dims``, ``base`` with dimension
    ``d`` swept through ``values[:, d]``.

    :param torch.Tensor base: a code ``(latent_dim,)``.
    :param torch.Tensor values: ``(steps, latent_dim)``, e.g. :func:`prior_quantiles`.
    :param dims: dimension indices, one row each.
    :returns: ``(len(dims), steps, latent_dim)``.
    """
    rows = []
    for d in dims:
        z = base.expand(len(values), -1).clone()
        z[:, d] = values[:, d]
        rows.append(z)
    return torch.stack(rows)


def interpolation_codes(z_a: torch.Tensor, z_b: torch.Tensor, steps: int) -> torch.Tensor:
    """Straight lines from ``z_a`` to ``z_b`` (both ``(P, latent_dim)``),
    ends included: ``(P, steps, latent_dim)``."""
    t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device)[None, :, None]
    return (1 - t) * z_a[:, None] + t * z_b[:, None]


def manifold_codes(values: torch.Tensor) -> torch.Tensor:
    """A grid over a 2-D latent: ``values`` ``(n, 2)`` gives ``(n, n, 2)``
    with ``z2`` decreasing down the rows and ``z1`` increasing along them,
    so that drawn as an image the axes point the usual way."""
    if values.shape[-1] != 2:
        raise DataError(f"the latent manifold needs a 2-D latent, got {values.shape[-1]} dimensions")
    z1 = values[:, 0]
    z2 = values[:, 1].flip(0)
    return torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1)
