"""The TensorBoard callback writes scalars every epoch and images every few
epochs, and does not change the training run."""

import pytest
import torch

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from pyrovae import VAE, load_config, load_data  # noqa: E402
from pyrovae.report.tensorboard import TensorBoardCallback  # noqa: E402
from pyrovae.training.trainer import Trainer  # noqa: E402

from tiny_run import CONFIG, one_thread  # noqa: E402


def test_scalars_and_images(tmp_path):
    cfg = load_config({**CONFIG, "train": {**CONFIG["train"], "epochs": 3}})
    splits = load_data(cfg.data)
    trainer = Trainer(VAE.from_config(cfg, data_shape=splits.data_shape), splits, cfg)
    callback = TensorBoardCallback(tmp_path / "tb", image_every=2, num_images=16)
    with one_thread():
        history = trainer.fit()
        rng = torch.get_rng_state()
        for record in history:
            callback.on_epoch_end(trainer, record)
        callback.on_train_end(trainer)
        assert torch.equal(torch.get_rng_state(), rng)  # image draws use a forked generator
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = events.Tags()
    assert {"train_loss", "val_loss", "val_kl", "val_reconstruction"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("val_loss")] == [1, 2, 3]
    assert set(tags["images"]) == {"samples", "reconstructions"}
    assert [e.step for e in events.Images("samples")] == [2, 3]  # every 2 epochs and after the last
    assert events.Images("samples")[0].width > 8
