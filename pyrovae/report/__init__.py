"""Reporting: figures, latent codes, probes and TensorBoard."""
