"""``train.precision``: the matrix products of training in bf16, the rest in fp32.

With ``precision: bf16`` every matrix-product layer of the model
(``nn.Linear``, convolutions; ``MATMUL_LAYERS``) runs under
``torch.autocast(dtype=torch.bfloat16)`` during the training steps and hands
its output back in fp32. So:

- the weights the optimizer updates stay fp32 ("master weights"): autocast
  casts a bf16 copy of them for each product;
- activations between layers, every distribution's parameters, every
  log-density and the loss are computed in fp32; only the products
  themselves round their inputs to bf16's 8-bit mantissa;
- validation, evaluation and sampling run in fp32.

Why per layer and not one autocast around the whole step: under a global
autocast the networks' bf16 outputs would flow into Pyro's sites, and the
Gaussian and Bernoulli log-densities would be taken in bf16.

bf16 pays only where the hardware has bf16 matrix units: CPUs with AMX or
AVX-512 BF16, and CUDA GPUs of compute capability 8.0 or newer. Elsewhere
(an AVX2-only CPU emulates bf16 products, many times slower than fp32) the
setting is refused with a :class:`~pyrovae.errors.ConfigError` that says so.

Example::

    precision = Precision("bf16", vae, torch.device("cpu"))  # ConfigError without bf16 units
    with precision:  # inside: bf16 products, fp32 everything else
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        loss.backward()
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from ..config import PRECISIONS
from ..errors import ConfigError

__all__ = ["PRECISIONS", "MATMUL_LAYERS", "Precision", "bf16_unsupported_reason"]

#: the layers whose products run in bf16 under ``precision: bf16``
MATMUL_LAYERS = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                 nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def bf16_unsupported_reason(device: torch.device) -> Optional[str]:
    """Why bf16 products would not pay on ``device``, or None where they do."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return f"the GPU {torch.cuda.get_device_name(device)} has no native bf16 (it needs compute capability 8.0 or newer)"
    if device.type == "cpu":
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None
        return (
            f"this CPU has no bf16 matrix units (AMX or AVX-512 BF16; torch sees {torch.backends.cpu.get_cpu_capability()}), "
            "so bf16 products are emulated and run many times slower than fp32"
        )
    return f"bf16 training is not supported on {device.type} devices"


class Precision:
    """A reusable context manager: inside it, ``model``'s matrix-product
    layers compute in ``precision`` (see the module notes); outside, nothing
    changes. ``fp32`` is a no-op.

    :param str precision: one of :data:`PRECISIONS`.
    :param nn.Module model: the model whose layers are switched.
    :param torch.device device: where the model runs; bf16 is refused
        where :func:`bf16_unsupported_reason` gives a reason.
    :raises ConfigError: an unknown precision, or bf16 where it does not pay.
    """

    def __init__(self, precision: str, model: nn.Module, device: torch.device):
        if precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bf16":
            reason = bf16_unsupported_reason(device)
            if reason is not None:
                raise ConfigError(f"train.precision: bf16 is refused here: {reason}; use train.precision: fp32")
        self.precision, self.model, self.device_type = precision, model, device.type
        self._handles: List[torch.utils.hooks.RemovableHandle] = []

    @property
    def layers(self) -> List[nn.Module]:
        """The layers whose products run in bf16 (empty for fp32)."""
        if self.precision == "fp32":
            return []
        return [m for m in self.model.modules() if isinstance(m, MATMUL_LAYERS)]

    def __enter__(self) -> "Precision":
        regions = []  # the open autocast regions; a layer's forward opens one and closes it

        def enter(module, inputs):
            region = torch.autocast(self.device_type, dtype=torch.bfloat16)
            region.__enter__()
            regions.append(region)

        def leave(module, inputs, output):
            regions.pop().__exit__(None, None, None)
            return None if output is None else output.float()  # None: the layer raised

        for layer in self.layers:

            # always_call: the autocast region closes even when the layer raises
            self._handles += [layer.register_forward_pre_hook(enter), layer.register_forward_hook(leave, always_call=True)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
