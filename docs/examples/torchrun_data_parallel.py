"""
Data-parallel training with torchrun
====================================

.. note::

   This example is shown, not run: it needs several processes started by
   ``torchrun``. Save it as ``train_ddp.py`` and launch it as below.

A script that calls :func:`pyrovae.train` runs data-parallel unchanged when
``torchrun`` starts it: the trainer reads the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...) and switches to its
data-parallel strategy. Every process runs the whole script:

.. code-block:: bash

   # two processes on this machine (gloo on CPU, NCCL with one GPU per process)
   torchrun --nproc_per_node=2 train_ddp.py

   # the command line does the same without a script
   torchrun --nproc_per_node=2 -m pyrovae train --config cfg.yaml --out runs/ddp
   torchrun --nproc_per_node=2 -m pyrovae train --resume runs/ddp \\
       --set train.epochs=20

   # two nodes of four processes: run on every node
   torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=4 \\
       --rdzv_backend=c10d --rdzv_endpoint=$HOST0:29500 --rdzv_id=vae1 train_ddp.py

What the processes compute together:

* ``train.batch_size`` is the *global* batch: every rank draws the same
  permutation and takes every W-th point of each batch, so W processes take
  exactly the steps one process would take on the whole batch (the tests
  check this to 1e-6).
* Gradients are averaged by ``DistributedDataParallel`` around a small
  module whose forward is ``Trace_ELBO().differentiable_loss(model.model,
  model.guide, **batch)``.
* Each rank draws its own latent noise and binarization; losses are summed
  over ranks, so a NaN stops (or is skipped) on every rank at once.
* Rank 0 alone writes the run directory. Checkpoints hold every rank's
  random state, so ``--resume`` with the same number of processes continues
  exactly.
* torchrun sets ``OMP_NUM_THREADS=1``: give each process cores / processes
  threads.

On a CPU, data parallelism pays only for large batches: the Performance
page (:ref:`performance`) has the measurements of this project's 2-core
machine.
"""

# %%
# ``train_ddp.py``: the same code as a single-process script, plus leaving
# the process group at the end (``pyrovae.train`` joins it under torchrun
# and leaves it joined, so that a script can go on using it).
import os

import torch
import torch.distributed as dist

import pyrovae


def main():
    cfg = pyrovae.load_config(
        {
            "data": {"name": "mnist", "download": False},
            "model": {"latent_dim": 16},
            "train": {
                "epochs": 10,
                "batch_size": 1000,
                "device": "auto",
                "seed": 0,
                "progress": False,
            },
        }
    )
    splits = pyrovae.load_data(cfg.data)
    vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
    # every rank trains its share of each global batch; rank 0 writes
    # runs/ddp (config.yaml, checkpoints, metrics, figures)
    history = pyrovae.train(vae, splits, cfg, run_dir="runs/ddp")
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"validation -ELBO {history[-1]['val_loss']:.2f} nats per point")
    if dist.is_initialized():
        dist.barrier()  # no rank leaves while another still talks to it
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
