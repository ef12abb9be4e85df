"""Encoder and decoder networks: plain ``nn.Module``s that hold no distributions.

An **encoder** maps data of shape ``(*batch, *data_shape)`` to features of
shape ``(*batch, out_features)``; the guide family decides how many features
it needs and turns them into q(z|x).

A **decoder** maps latents of shape ``(*batch, latent_dim)`` to likelihood
parameters of shape ``(*batch, *out_shape)``; the likelihood decides
``out_shape`` and turns the parameters into p(x|z).

Any number of leading batch dimensions is allowed (particles, data), so the
same networks serve training, vectorized particles and importance sampling.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import nn

from ..registry import Registry
from ..validators import positive_int, positive_ints

__all__ = ["encoders", "decoders", "register_encoder", "register_decoder", "ACTIVATIONS"]

encoders = Registry("encoder", context=("data_shape", "out_features"))
decoders = Registry("decoder", context=("latent_dim", "out_shape"))
register_encoder = encoders.register
register_decoder = decoders.register

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (see :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], act: str) -> nn.Sequential:
    """Linear layers of the given ``sizes`` with ``act`` between them (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(make_activation(act))
    return nn.Sequential(*layers)


def _hidden_sizes(hidden) -> Tuple[int, ...]:
    return positive_ints(hidden, "hidden sizes")


def _conv_sizes(shape, role: str, channels, hidden) -> Tuple[Tuple[int, ...], int]:
    """The conv encoder's or decoder's checked ``channels`` and fully connected
    width ``hidden`` for images of ``shape`` ``(C, H, W)``."""
    channels = _hidden_sizes(channels)
    hidden = positive_int(hidden, "hidden (the fully connected width)")
    _check_image_shape(shape, role, len(channels))
    return channels, hidden


@register_encoder("mlp")
class MLPEncoder(nn.Module):
    """Fully connected encoder; the data is flattened first.

    :param tuple data_shape: shape of one data point, e.g. ``(1, 28, 28)``.
    :param int out_features: number of output features (set by the guide).
    :param list hidden: hidden layer sizes; ``[]`` gives a linear map.
    :param str activation: nonlinearity between layers.
    """

    def __init__(self, data_shape, out_features, hidden=(200, 200), activation="tanh"):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = mlp([math.prod(self.data_shape), *_hidden_sizes(hidden), out_features], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(*batch, *data_shape) -> (*batch, out_features)``"""
        batch = x.shape[: x.dim() - len(self.data_shape)]
        return self.net(x.reshape(*batch, -1))


@register_decoder("mlp")
class MLPDecoder(nn.Module):
    """Fully connected decoder.

    :param int latent_dim: size of z.
    :param tuple out_shape: shape of the likelihood parameters per data point.
    :param list hidden: hidden layer sizes; ``[]`` gives a linear map.
    :param str activation: nonlinearity between layers.
    """

    def __init__(self, latent_dim, out_shape, hidden=(200, 200), activation="tanh"):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = mlp([latent_dim, *_hidden_sizes(hidden), math.prod(self.out_shape)], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(*batch, latent_dim) -> (*batch, *out_shape)``"""
        return self.net(z).reshape(*z.shape[:-1], *self.out_shape)


class GatedDense(nn.Module):
    """A gated dense layer (Dauphin et al. 2017), as in Tomczak & Welling
    (2018): ``h = (W x + b) * sigmoid(V x + c)``; ``(*batch, n_in) -> (*batch, n_out)``.
    W and V are stacked in one linear layer, so a layer is one matrix product."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.linear(x).chunk(2, dim=-1)
        return h * torch.sigmoid(gate)


INITS = {
    "default": None,  # torch's own initialization
    # He et al. (2015): N(0, 2 / fan_in), the init of Tomczak & Welling's code
    "he": lambda w: nn.init.normal_(w, 0.0, math.sqrt(2.0 / w.shape[1])),
}


def gated_mlp(sizes: Sequence[int], init: str = "default") -> nn.Sequential:
    """Gated dense layers of the given ``sizes`` and a plain linear output layer."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    layers = [GatedDense(n_in, n_out) for n_in, n_out in zip(sizes[:-2], sizes[1:-1])]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    net = nn.Sequential(*layers)
    if INITS[init] is not None:
        for module in net.modules():
            if isinstance(module, nn.Linear):
                INITS[init](module.weight)
                nn.init.zeros_(module.bias)
    return net


@register_encoder("gated_mlp")
class GatedMLPEncoder(MLPEncoder):
    """Encoder of gated dense layers (Tomczak & Welling 2018 use two of 300
    units); the data is flattened first.

    :param list hidden: gated layer sizes; ``[]`` gives a linear map.
    :param str init: weight initialization, ``default`` (torch's) or ``he``.
    """

    def __init__(self, data_shape, out_features, hidden=(300, 300), init="default"):
        nn.Module.__init__(self)
        self.data_shape = tuple(data_shape)
        self.net = gated_mlp([math.prod(self.data_shape), *_hidden_sizes(hidden), out_features], init)


@register_decoder("gated_mlp")
class GatedMLPDecoder(MLPDecoder):
    """Decoder of gated dense layers and a linear output layer.

    :param list hidden: gated layer sizes; ``[]`` gives a linear map.
    :param str init: weight initialization, ``default`` (torch's) or ``he``.
    """

    def __init__(self, latent_dim, out_shape, hidden=(300, 300), init="default"):
        nn.Module.__init__(self)
        self.out_shape = tuple(out_shape)
        self.net = gated_mlp([latent_dim, *_hidden_sizes(hidden), math.prod(self.out_shape)], init)


def _check_image_shape(shape, what: str, levels: int):
    if len(shape) != 3:
        raise ValueError(
            f"the conv {what} needs image data of shape (channels, height, width), got "
            f"{tuple(shape)}; use the mlp {what} for flat data"
        )
    factor = 2**levels
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(
            f"the conv {what} with {levels} stride-2 layers needs height and width "
            f"divisible by {factor}, got {tuple(shape[1:])}"
        )


@register_encoder("conv")
class ConvEncoder(nn.Module):
    """Convolutional encoder for images of shape ``(C, H, W)``: stride-2
    4×4 convolutions, then a fully connected layer.

    :param list channels: output channels of each conv layer; each halves H and W.
    :param int hidden: width of the fully connected layer.
    :param str activation: nonlinearity.
    """

    def __init__(self, data_shape, out_features, channels=(32, 64), hidden=256, activation="relu"):
        super().__init__()
        channels, hidden = _conv_sizes(data_shape, "encoder", channels, hidden)
        self.data_shape = tuple(data_shape)
        c, h, w = self.data_shape
        layers, c_in = [], c
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), make_activation(activation)]
            c_in = c_out
        scale = 2 ** len(channels)
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(c_in * (h // scale) * (w // scale), hidden),
            make_activation(activation),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(*batch, C, H, W) -> (*batch, out_features)``"""
        batch = x.shape[:-3]
        out = self.head(self.conv(x.reshape(-1, *self.data_shape)))
        return out.reshape(*batch, -1)


@register_decoder("conv")
class ConvDecoder(nn.Module):
    """Convolutional decoder mirroring the ``conv`` encoder (``ConvEncoder``): a fully
    connected layer, then stride-2 4×4 transposed convolutions.

    :param list channels: channels of each transposed conv input, from the
        smallest feature map up (the encoder's ``channels`` reversed).
    :param int hidden: width of the fully connected layer.
    :param str activation: nonlinearity.
    """

    def __init__(self, latent_dim, out_shape, channels=(64, 32), hidden=256, activation="relu"):
        super().__init__()
        channels, hidden = _conv_sizes(out_shape, "decoder", channels, hidden)
        self.out_shape = tuple(out_shape)
        c, h, w = self.out_shape
        scale = 2 ** len(channels)
        self.start_shape = (channels[0], h // scale, w // scale)
        act = make_activation
        self.head = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            act(activation),
            nn.Linear(hidden, math.prod(self.start_shape)),
            act(activation),
        )
        layers = []
        for i, c_in in enumerate(channels):
            c_out = channels[i + 1] if i + 1 < len(channels) else c
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i + 1 < len(channels):
                layers.append(act(activation))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(*batch, latent_dim) -> (*batch, *out_shape)``"""
        batch = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start_shape)
        return self.deconv(h).reshape(*batch, *self.out_shape)
