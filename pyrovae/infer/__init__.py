"""Inference: objectives, importance-sampled evaluation and imputation.

- :mod:`.weights`: the one place where a guide trace and a replayed model
  trace become per-point log importance weights;
- :mod:`.fields`: checks and chunks the batch fields of evaluation data;
- :mod:`.loglik`: streaming importance-sampled log p(x) and ELBO terms;
- :mod:`.evaluate`: the report papers give (re-exports :mod:`.loglik`'s names);
- :mod:`.masks` and :mod:`.impute`: data recovery;
- :mod:`.objectives`: training objectives (or the model's own, through its
  ``objective`` capability);
- ``enumerated``: enumerated discrete sites summed out exactly, for training
  and evaluation alike.
"""
