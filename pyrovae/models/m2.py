"""Semi-supervised M2 (Kingma, Rezende, Mohamed & Welling 2014), the Pyro way.

::

    model(x, y=None):  y ~ Cat(uniform)                observed where the label is known
                       z ~ p(z)          (any registered prior)       scaled by beta
                       x ~ p(x | z, y)
    guide(x, y=None):  y ~ q(y | x)      (classifier)  only where y is not observed
                       z ~ q(z | x, y)                              scaled by beta

The label site ``y`` is listed in ``enumerate_sites``, so pyrovae trains
with ``TraceEnum_ELBO`` and sums it out exactly over the C classes
(its ``objective``, a ``pyrovae.infer.enumerated.EnumeratedObjective``),
and importance sampling sums it out too: log p(x) = logsumexp_y
[log p(y) + log p(x | y)] (:mod:`pyrovae.infer.loglik`). Its ``batch_needs``
put labelled points in every step, and its ``metrics`` give the classifier's
error (``val_error`` in training, ``classification_error`` in evaluation).

**The objective** is Kingma et al.'s eq. 9,

    J^α = Σ_labelled L(x, y) + Σ_unlabelled U(x) + α · mean_labelled[-log q(y | x)],

with L and U the negative ELBOs of a labelled and an unlabelled point and
α = ``classification_weight`` · N (N training points; Kingma et al. use
0.1). A batch mixes both kinds (``y = -1`` marks a missing label): the
objective scores its unlabelled points with y enumerated, its labelled
points with y observed, and weights the two parts and the classification
term by the data's counts so that each step estimates J^α up to one
positive factor (see ``pyrovae.infer.enumerated.EnumeratedObjective``);
given ``num_data`` (the training set's size) the loss is the full-data
estimate of J^α itself, and on several processes the weights come from the
counts of the whole batch. :meth:`auxiliary_loss` is the classification term.

The networks are registered ones: q(z | x, y) and p(x | z, y) read the
one-hot label by concatenation (:mod:`pyrovae.models.cvae`); the classifier
q(y | x) is the encoder spec ``classifier`` (default: ``model.encoder``)
with C outputs (logits).

Example::

    cfg = pyrovae.load_config({"model": {"name": "m2", "latent_dim": 50}, "data": {"labelled": 100}})
    m2 = pyrovae.build_model(cfg.model, (1, 28, 28))
    m2.classify(x_test)                     # (N,) predicted labels
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

import pyro
import pyro.distributions as dist

from ..components.nets import encoders
from ..errors import ConfigError, DataError
from ..validators import int_at_least, is_number
from ..data.batches import BatchNeeds
from ..infer.enumerated import KNOWN_WEIGHTINGS, known_counts
from .base import register_model
from .cvae import Condition, ConditionalBase
from .family import mean_code
from .helpers import kl_scale, observe

__all__ = ["M2"]


class M2(ConditionalBase):
    """The semi-supervised VAE M2: a conditional VAE
    (:class:`~pyrovae.models.cvae.ConditionalBase`) whose label is a latent
    variable where it is not observed.

    :param nn.Module classifier: ``x (*batch, *data_shape) -> logits (*batch, C)`` of q(y | x).
    :param float classification_weight: a in α = a · N, the weight of the
        labelled points' classification term (Kingma et al.: 0.1).
    :param str labelled_weighting: ``data`` weighs the labelled points' ELBO
        by their share of the data (an unbiased estimate of J^α); ``batch``
        weighs each labelled point in a batch like an unlabelled one (see
        ``pyrovae.infer.enumerated.EnumeratedObjective``).

    The other parameters are those of :class:`~pyrovae.models.cvae.ConditionalBase`.
    """

    registered_name = "m2"
    family = "m2"
    latent_sites = ("y", "z")
    #: summed out by TraceEnum_ELBO in training and exactly in importance sampling
    enumerate_sites = ("y",)

    def __init__(self, data_shape, latent_dim, condition, encoder, decoder, prior, likelihood, guide_family,
                 classifier: nn.Module = None, classification_weight: float = 0.1, labelled_weighting: str = "data"):
        super().__init__(data_shape, latent_dim, condition, encoder, decoder, prior, likelihood, guide_family)
        if not condition.is_label:
            raise ConfigError("the m2 model's y is a class label: set model.options.num_classes, not condition_dim")
        self.classifier = classifier
        self.classification_weight = float(classification_weight)
        self.labelled_weighting = labelled_weighting
        self.num_classes = condition.num_classes
        # p(y): uniform over the classes, as in Kingma et al.
        self.register_buffer("class_logits", torch.zeros(self.num_classes))

    @classmethod
    def _build(cls, config, data_shape, num_classes: int = 10, classifier: Any = None,
               classification_weight: float = 0.1, labelled_weighting: str = "data"):
        """The model for the ``model`` section ``config``; ``classifier`` is
        the encoder spec of q(y | x) (default: ``config.encoder``)."""
        net = encoders.build(config.encoder if classifier is None else classifier, data_shape=data_shape,
                             out_features=num_classes)
        return cls._build_conditional(config, data_shape, Condition(num_classes, None), classifier=net,
                                      classification_weight=classification_weight,
                                      labelled_weighting=labelled_weighting)

    # -- distributions -----------------------------------------------------
    def label_posterior(self, x: torch.Tensor):
        """q(y | x): a ``Categorical`` with batch shape ``x``'s batch dims."""
        return dist.Categorical(logits=self.classifier(x))

    def label_prior(self):
        """p(y): ``Categorical`` over the C classes, batch shape ``()``."""
        return dist.Categorical(logits=self.class_logits)

    @staticmethod
    def _check_observed(y: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if y is None:
            return None
        if bool((y < 0).any()):
            raise DataError(
                "m2 model/guide: y holds -1 (missing) labels; call them with the labelled points' y and the "
                "unlabelled points without y, or train with pyrovae, whose objective splits a mixed batch"
            )
        return y.long()

    # -- Pyro model and guide --------------------------------------------
    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, *, num_data: Optional[int] = None,
              beta: float = 1.0, obs_mask=None):
        """p(y) p(z) p(x | z, y); ``y`` observed when given, else latent
        (enumerated by the objective). Arguments as
        :meth:`ConditionalVAE.model <pyrovae.models.cvae.ConditionalVAE.model>`,
        with ``y`` ``(B,)`` optional."""
        self._register(decoder=self.decoder, prior=self.prior_module, likelihood=self.likelihood)
        y = self._check_observed(y)
        prior = self.prior()
        with self._data_plate(x, num_data):
            y = pyro.sample("y", self.label_prior(), obs=y)
            with kl_scale(beta):
                z = pyro.sample("z", prior)
            observe(self.likelihood, self.decoder(z, self.condition(y, z)), x, obs_mask)
        return z

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, *, num_data: Optional[int] = None,
              beta: float = 1.0, obs_mask=None):
        """q(y | x) where ``y`` is not given, then q(z | x, y)."""
        self._register(encoder=self.encoder, guide=self.guide_family, classifier=self.classifier)
        y = self._check_observed(y)
        with self._data_plate(x, num_data):
            if y is None:
                y = pyro.sample("y", self.label_posterior(x))
            with kl_scale(beta):
                return pyro.sample("z", self.encode(x, y))

    def auxiliary_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The classification term of labelled points: ``a · Σ -log q(y | x)``
        (a scalar, nats; the objective multiplies it by N over the labelled
        count, making α = a · N)."""
        return -self.classification_weight * self.label_posterior(x).log_prob(y.long()).sum()

    def local_guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        """The guide family with free per-point parameters (the
        ``local_guide`` capability, for :func:`~pyrovae.inference_gaps`).

        With labels ``y`` ``(N,)`` given, y stays observed and q*(z | x, y)
        has free features per point, as the cvae's. Without them, q*(y | x)
        has free logits per point and q*(z | x, y) free features per point
        *and class*: the guide's z layer reads y, which takes C values, so
        each point gets one set of features for each value, started at the
        encoder's output at that class (q* starts at the amortized guide).
        :func:`~pyrovae.inference_gaps` sums y out exactly, as training does.

        :param torch.Tensor x: a batch ``(N, *data_shape)``.
        :param torch.Tensor y: labels ``(N,)`` in 0..C-1, or None.
        :returns: ``(params, guide_fn)``: with ``y``, ``{"z": (N, F)}``;
            without, ``{"y": (N, C)`` logits of q(y | x), ``"z": (N, C, F)}``
            (F = ``guide.num_features``), all detached. ``guide_fn(params, x,
            y=None, **kwargs)`` is a Pyro guide over the sites of
            :meth:`guide`: it draws y from the free logits where ``y`` is not
            given, then z from the features of the point's class (any
            leading dims of y, enumeration's or the particles', broadcast).

        Example::

            >>> import torch
            >>> from pyrovae.models.m2 import M2
            >>> m2 = M2.from_config({"latent_dim": 2}, (1, 4, 4), num_classes=3)
            >>> params, guide_fn = m2.local_guide(torch.zeros(5, 1, 4, 4))
            >>> {k: tuple(v.shape) for k, v in params.items()}
            {'y': (5, 3), 'z': (5, 3, 4)}
        """
        y = self._check_observed(y)
        with torch.no_grad():
            if y is not None:
                params = {"z": self.encoder(x, self.condition(y, x)).detach().clone()}
            else:
                classes = torch.arange(self.num_classes, device=x.device).unsqueeze(-1)  # (C, 1): against x (N, ...)
                features = self.encoder(x, self.condition(classes, x))  # (C, N, F)
                params = {"y": self.classifier(x).detach().clone(), "z": features.transpose(0, 1).detach().clone()}

        def guide_fn(params, x, y=None, **kwargs):
            y = self._check_observed(y)
            with self._data_plate(x, None):
                if "y" not in params:
                    if y is None:
                        raise DataError("these local_guide parameters were made for labelled points: pass their y")
                    features = params["z"]
                else:
                    if y is None:
                        y = pyro.sample("y", dist.Categorical(logits=params["y"]))
                    features = params["z"][torch.arange(len(x), device=x.device), y.long()]
                return pyro.sample("z", self.guide_family.dist(features))

        return params, guide_fn

    # -- what training and evaluation ask of the family ----------------------
    def objective(self, spec, train_fields: Optional[Mapping[str, torch.Tensor]] = None):
        """The objective capability: J^α, ``TraceEnum_ELBO`` with ``y`` summed
        out where it is missing and observed where it is given, the labelled
        points' ELBO and :meth:`auxiliary_loss` weighed by the labelled and
        unlabelled counts of ``train_fields["y"]`` (the training labels
        ``(N,)``, -1 for none; without them, each batch's own counts).

        Example::

            objective = m2.objective({"name": "elbo"}, {"x": x_train, "y": y_train})
            loss = objective.differentiable_loss(m2.model, m2.guide, x, y=y)   # y: (B,), -1 where unlabelled
        """
        from ..infer.objectives import enumerated_objective

        train_fields = train_fields or {}
        probe = {k: v[:2].to(self.device) for k, v in train_fields.items()} if "x" in train_fields else None
        return enumerated_objective(spec, self, probe, counts=known_counts(train_fields.get("y")),
                                    auxiliary=self.auxiliary_loss, known_weighting=self.labelled_weighting)

    def batch_needs(self, train) -> BatchNeeds:
        """The batch_needs capability: ``train.labelled_batch_size`` labelled
        points (default ``train.batch_size``) in every step, besides
        ``train.batch_size`` unlabelled ones.

        Example::

            m2.batch_needs(cfg.train)   # BatchNeeds(field='y', per_step=100)
        """
        return BatchNeeds(field="y", per_step=train.labelled_batch_size or train.batch_size)

    @torch.no_grad()
    def metrics(self, fields: Mapping[str, torch.Tensor]):
        """The metrics capability: ``{"error": (misclassified, labelled)}``,
        the classifier's mistakes on the points of ``fields`` whose label
        ``y`` ``(B,)`` is given (-1 marks none), and their number; ``{}``
        without labels. Training reports ``val_error``, evaluation
        ``classification_error`` and ``labelled_points``.

        Example::

            m2.metrics({"x": x, "y": y})   # {"error": (tensor(3.), tensor(40.))}
        """
        y = fields.get("y")
        if y is None:
            return {}
        known = y >= 0
        wrong = (self.classify(fields["x"]).to(y.device) != y) & known
        return {"error": (wrong.sum().double(), known.sum().double())}

    #: the metric_names capability: how evaluation reports the error (eval.json keys, table title)
    metric_names = {"error": ("classification_error", "labelled_points", "classification error of q(y|x)")}

    # -- conveniences ------------------------------------------------------
    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable label under q(y | x), ``(N,)``."""
        return self.classifier(x).argmax(-1)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``n`` data points from p(y) p(z) p(x | z, y); with ``y`` ``(n,)``
        the labels are fixed (class-conditional samples)."""
        if y is None:
            y = self.label_prior().sample((n,)).to(self.device)
        return self._sample_given(n, mean, torch.as_tensor(y, device=self.device))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """E[x | z = code(x, y), y], with ``y`` the classifier's label when not given."""
        y = self.classify(x) if y is None else y
        return self.likelihood.mean(self.decoder(self.code(x, y), self.condition(y, x)))

    def encode(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        """q(z | x, y), with ``y`` the classifier's label when not given."""
        return self._posterior(x, self.classify(x) if y is None else y)

    @torch.no_grad()
    def code(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mean of q(z | x, y) ``(N, latent_dim)``, with ``y`` the classifier's label when not given."""
        return mean_code(self.encode(x, y))

    def check_fields(self, fields: Mapping[str, torch.Tensor], what: str = "data") -> None:
        """Labels in 0..C-1, or -1 where a point has none."""
        if fields.get("y") is not None:
            self.condition.check(fields["y"], len(fields["x"]), what, allow_missing=True)


@register_model("m2")
def build_m2(config, data_shape, num_classes=10, classification_weight=0.1, classifier: Any = None,
             labelled_weighting="data"):
    """Kingma et al.'s (2014) semi-supervised M2 with the label summed out by
    enumeration; ``classifier`` is the encoder spec of q(y | x) (default:
    ``model.encoder``), ``classification_weight`` is a in α = a · N,
    ``labelled_weighting`` (``data`` or ``batch``) how a step weighs its
    labelled points' ELBO."""
    if labelled_weighting not in KNOWN_WEIGHTINGS:
        raise ConfigError(f"model.options.labelled_weighting must be one of {', '.join(KNOWN_WEIGHTINGS)}, "
                          f"got {labelled_weighting!r}")
    if not is_number(classification_weight) or not classification_weight >= 0:
        raise ConfigError(f"model.options.classification_weight must be a number >= 0, got {classification_weight!r}")
    int_at_least(num_classes, 2, "model.options.num_classes")
    return M2.from_config(config, data_shape, num_classes=num_classes, classifier=classifier,
                          classification_weight=classification_weight, labelled_weighting=labelled_weighting)
