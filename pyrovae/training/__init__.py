"""Training: the trainer, data-parallel strategy, optimizers and schedules."""
