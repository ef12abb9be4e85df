"""Inference: objectives, importance-sampled evaluation and imputation."""
