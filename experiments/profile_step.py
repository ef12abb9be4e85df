"""Where one training step's time goes: pyrovae's loss against the
hand-written one, and whether ``torch.compile`` can take pyrovae's whole loss.

Workload: the Burda 784-200-200-50 VAE of ``bench_train.py``, batch 100,
binary images, fused Adam, one torch thread.

1. ``torch.profiler`` over ``--steps`` steps of each loop: the top operators
   by self CPU time, and every aten operator whose count per step differs
   between the two (what pyrovae runs in addition: the Normal log-densities
   in ``torch.distributions`` form and their bookkeeping; the rest of its
   extra time is Pyro's messengers in Python).
2. ``torch._dynamo.explain`` of pyrovae's whole loss
   (``LeanTraceELBO.differentiable_loss`` of the model and guide): how many
   graphs and graph breaks, and why. Each break is Python run eagerly at
   every step, so a loss with a break at every Pyro site gains nothing from
   being compiled.
3. The one fusion that compiling pyrovae's likelihood could offer: the
   Bernoulli log-mass (``binary_cross_entropy_with_logits`` and the sum over
   pixels) with the decoder's last product, forward and backward, eager
   against ``torch.compile``; medians of ``--repeats`` rounds of 100 calls.

::

    python experiments/profile_step.py --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import pyro
import pyrovae
from pyrovae.infer.objectives import LeanTraceELBO
from pyrovae.models.base import unregistered

from bench_train import handwritten_loss  # the hand-written loop's loss (this script's folder is on sys.path)

BASE = {"data": {"val_size": 0}, "train": {"epochs": 1, "progress": False, "batch_size": 100}}


def build():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = pyrovae.VAE.from_config(BASE, data_shape=(1, 28, 28))
    return vae, torch.optim.Adam(vae.parameters(), lr=1e-3, fused=True)


def pyrovae_loss_fn(vae):
    elbo = LeanTraceELBO(max_plate_nesting=1)

    def loss(x):
        with unregistered(vae):
            return elbo.differentiable_loss(vae.model, vae.guide, x=x, beta=1.0)

    return loss


def profile(name, loss_fn, opt, xs, top):
    for x in xs[:5]:  # warm-up: allocator, Adam's state
        opt.zero_grad(set_to_none=True)
        loss_fn(x).backward()
        opt.step()
    start = time.process_time()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for x in xs:
            loss = loss_fn(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    seconds = time.process_time() - start
    print(f"\n## {name}: {1e3 * seconds / len(xs):.2f} ms per step under the profiler (CPU time)\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))
    return {event.key: event.count / len(xs) for event in prof.key_averages() if event.key.startswith("aten::")}


def bernoulli_log_mass(logits, x):
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)


def time_log_mass(repeats):
    """Milliseconds per call of the decoder's last product (100 x 200 x 784)
    and the log-mass, forward and backward: eager, compiled."""
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((100, 784), 0.2), generator=g)
    h = torch.randn(100, 200, generator=g)
    weight = (0.1 * torch.randn(200, 784, generator=g)).requires_grad_()
    variants = {"eager": bernoulli_log_mass, "compiled": torch.compile(bernoulli_log_mass, dynamic=False)}

    def call(fn):
        fn(h @ weight, x).sum().backward()

    for fn in variants.values():
        for _ in range(20):  # compilation and warm-up
            call(fn)
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.process_time()
            for _ in range(100):
                call(fn)
            times[name].append(10 * (time.process_time() - start))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--top", type=int, default=12, help="operators listed per loop")
    p.add_argument("--repeats", type=int, default=15, help="rounds of the log-mass timing")
    args = p.parse_args()
    torch.set_num_threads(1)
    pyro.enable_validation(False)  # the trainer's default: the data are checked once, up front
    g = torch.Generator().manual_seed(0)
    xs = [torch.bernoulli(torch.full((100, 1, 28, 28), 0.2), generator=g) for _ in range(args.steps)]

    vae, opt = build()
    by_hand = profile("hand-written loss", lambda x: handwritten_loss(vae, x), opt, xs, args.top)
    vae, opt = build()
    ours = profile("pyrovae loss (LeanTraceELBO, Pyro model and guide)", pyrovae_loss_fn(vae), opt, xs, args.top)
    print("\n## aten operators per step, where the two loops differ (pyrovae - hand-written)\n")
    for name in sorted(set(by_hand) | set(ours), key=lambda k: by_hand.get(k, 0) - ours.get(k, 0)):
        extra = ours.get(name, 0) - by_hand.get(name, 0)
        if abs(extra) >= 0.5:
            print(f"- {name}: {extra:+g} ({by_hand.get(name, 0):g} -> {ours.get(name, 0):g})")

    import torch._dynamo as dynamo

    vae, _ = build()
    explained = dynamo.explain(pyrovae_loss_fn(vae))(xs[0])
    print(f"\n## torch.compile of pyrovae's whole loss: {explained.graph_count} graphs, "
          f"{explained.graph_break_count} graph breaks\n")
    for reason in explained.break_reasons:
        where = reason.user_stack[-1] if reason.user_stack else None
        place = f"{where.filename.split('site-packages/')[-1]}:{where.lineno}" if where else "?"
        print(f"- {place}: {reason.reason.splitlines()[0]}")

    medians = time_log_mass(args.repeats)
    print(f"\n## The Bernoulli log-mass with the last product, forward and backward (median of {args.repeats} x 100):\n")
    for name, ms in medians.items():
        print(f"- {name}: {ms:.2f} ms per call ({ms / medians['eager']:.2f}x eager)")


if __name__ == "__main__":
    main()
