"""``train.precision``: bf16 matrix products with everything else in fp32.

The oracle for a bf16 layer is the product written out on bf16-rounded
inputs, ``F.linear(x.bfloat16(), W.bfloat16(), b.bfloat16()).float()``.
This machine may lack bf16 matrix units, where the setting is refused; the
tests that train in bf16 therefore declare the device capable
(``bf16_unsupported_reason`` patched), which changes nothing but the
refusal: torch then emulates the bf16 products, slowly but exactly.
"""

import pytest
import torch
import torch.nn.functional as F

import pyro
import pyro.poutine as poutine

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.training import precision as precision_module
from pyrovae.training.precision import Precision

from helpers import SHAPE, build, setup, tiny_config

CPU = torch.device("cpu")


@pytest.fixture
def capable(monkeypatch):
    monkeypatch.setattr(precision_module, "bf16_unsupported_reason", lambda device: None)


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="train.precision must be fp32 or bf16"):
        pyrovae.load_config(tiny_config(train={"precision": "fp16"}))


def test_bf16_is_refused_where_the_device_has_no_bf16_units(monkeypatch, tmp_path):
    monkeypatch.setattr(precision_module, "bf16_unsupported_reason", lambda device: "this CPU has no bf16 matrix units")
    cfg, splits, vae = setup(train={"precision": "bf16"})
    with pytest.raises(ConfigError, match="no bf16 matrix units.*use train.precision: fp32"):
        pyrovae.train(vae, splits, cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_refusal_reason_matches_what_torch_reports_of_this_cpu():
    reason = precision_module.bf16_unsupported_reason(CPU)
    assert (reason is None) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if reason is not None:
        assert torch.backends.cpu.get_cpu_capability() in reason


def test_fp32_changes_nothing():
    vae = build()
    x = torch.rand(4, *SHAPE)
    before = vae.encoder(x)
    with Precision("fp32", vae, CPU) as p:
        assert p.layers == []
        assert torch.equal(vae.encoder(x), before)


def test_bf16_layers_compute_bf16_products_and_return_fp32(capable):
    vae = build()
    layer = next(m for m in vae.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(5, layer.in_features)
    exact = F.linear(x, layer.weight, layer.bias)
    rounded = F.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16()).float()
    with Precision("bf16", vae, CPU) as p:
        assert layer in p.layers and len(p.layers) >= 4  # the encoder's and decoder's layers
        out = layer(x)
        assert out.dtype == torch.float32 and layer.weight.dtype == torch.float32
        assert torch.allclose(out, rounded, atol=1e-6)
        assert not torch.allclose(out, exact, atol=1e-6)  # the product really was rounded
        assert not torch.is_autocast_enabled("cpu")  # the region closed with the layer
    assert torch.equal(layer(x), exact)  # hooks gone


def test_a_layer_that_raises_leaves_autocast_off(capable):
    vae = build()
    layer = next(m for m in vae.modules() if isinstance(m, torch.nn.Linear))
    with Precision("bf16", vae, CPU):
        with pytest.raises(RuntimeError):
            layer(torch.randn(3, layer.in_features + 1))
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_sites_log_densities_are_fp32_and_close_to_fp32(capable):
    pyro.set_rng_seed(0)
    vae = build()
    x = torch.rand(20, *SHAPE).round()

    def traced_loss():
        pyro.set_rng_seed(1)
        guide = poutine.trace(vae.guide).get_trace(x)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
        model.compute_log_prob()
        guide.compute_log_prob()
        return model, guide

    model32, guide32 = traced_loss()
    with Precision("bf16", vae, CPU):
        model16, guide16 = traced_loss()
    for trace in (model16, guide16):
        for site in trace.nodes.values():
            if site["type"] == "sample":
                assert site["log_prob"].dtype == torch.float32, site["name"]
    elbo32 = float((model32.log_prob_sum() - guide32.log_prob_sum()).detach())
    elbo16 = float((model16.log_prob_sum() - guide16.log_prob_sum()).detach())
    assert elbo16 != elbo32 and abs(elbo16 - elbo32) < 0.01 * abs(elbo32)


def test_bf16_training_keeps_fp32_weights_and_learns_like_fp32(capable):
    records = {}
    for precision in ("fp32", "bf16"):
        cfg, splits, vae = setup(train={"precision": precision, "epochs": 3})
        history = pyrovae.train(vae, splits, cfg)
        assert all(p.dtype == torch.float32 for p in vae.parameters())
        records[precision] = history
    first, last = records["bf16"][0]["val_loss"], records["bf16"][-1]["val_loss"]
    assert last < first - 1.0  # it learns
    assert abs(last - records["fp32"][-1]["val_loss"]) < 0.02 * abs(last)  # and like fp32
    assert last != records["fp32"][-1]["val_loss"]
