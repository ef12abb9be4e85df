"""Training: the trainer, its strategies (one process or data-parallel), the
checkpoint state, callbacks, non-finite checks, optimizers and schedules."""
