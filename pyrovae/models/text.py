"""A sequence VAE for words (Bowman et al. 2016, "Generating Sentences from
a Continuous Space", arXiv:1511.06349), over characters, and the same GRU
as a plain character language model without a latent.

::

    text_vae  model(x):  z ~ N(0, I)                             scaled by beta
                         x_t ~ Cat(softmax(W h_t)),  h_t = GRU(h_{t-1}, [e(x_{t-1}), z]),  h_0 = tanh(A z)
              guide(x):  z ~ N(mu(x), diag sigma(x)^2)           GRU encoder, state at the end symbol
    char_lm   model(x):  x_t ~ Cat(softmax(W h_t)),  h_t = GRU(h_{t-1}, e(x_{t-1})),  h_0 = 0
              guide(x):  nothing (no latent: log p(x) is exact)

A word is a row of ``L = max_length + 1`` codes (:mod:`pyrovae.data.words`):
characters, one end symbol, padding. The characters and the end symbol are
scored, one ``Categorical`` per position ``.mask(...)`` ed to the positions
up to the first end symbol and ``.to_event(1)``, so padding never counts
whatever it holds. The decoder reads the true previous character (teacher
forcing); while training, *word dropout* replaces each of those inputs by
the UNK code with probability ``word_dropout``, which makes the decoder
lean on z (Bowman et al. Sec. 3.2). KL warm-up is ``train.kl_schedule``:
the model scales its latent site by ``beta``.

Imputation (``obs_mask``) hides characters only (``impute_mask``: a word's
length is observed): the hidden ones are drawn left to right from the
decoder (:class:`WordCompletion`, an importance proposal), the observed
ones scored, and ``impute_point`` reads the most probable character.

``x`` arrives as float codes (the trainer hands data over in the
parameters' dtype) and is read as ``long``. Every tensor may carry leading
dims left of the data plate (importance sampling's particles).

Example::

    >>> import torch, pyrovae
    >>> from pyrovae.data.words import encode_words
    >>> cfg = pyrovae.load_config({"model": {"name": "text_vae", "latent_dim": 4,
    ...                                      "options": {"hidden": 16, "embed_dim": 8}}})
    >>> vae = pyrovae.build_model(cfg.model, data_shape=(9,))        # words of up to 8 characters
    >>> x = encode_words(["cat", "horse"], max_length=8)
    >>> pyrovae.log_likelihood(vae, x, num_samples=10, seed=0).shape  # nats per word
    torch.Size([2])
    >>> len(vae.to_text(vae.sample(3))), vae.encode(x).mean.shape
    (3, torch.Size([2, 4]))
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
import torch.nn.functional as F

import pyro
import pyro.distributions as dist
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints

from ..data.words import END, FIRST_CHAR, PAD, UNK, VOCAB_SIZE, decode_words, padding_mask
from ..errors import ConfigError, DataError
from .base import register_model
from .family import LatentVariableModel
from .helpers import kl_scale

__all__ = ["CharDecoder", "CharEncoder", "TextVAE", "CharLM", "WordCompletion", "word_dropout_inputs"]


def word_dropout_inputs(x: torch.Tensor, rate: float) -> torch.Tensor:
    """The decoder's inputs for codes ``x`` ``(M, L)`` long: the end symbol
    (as start symbol), then ``x`` shifted right by one, each of those
    characters replaced by UNK with probability ``rate`` (0: teacher forcing)."""
    inputs = torch.cat([torch.full_like(x[:, :1], END), x[:, :-1]], 1)
    if rate > 0:
        drop = torch.rand(inputs.shape, device=x.device) < rate
        drop[:, 0] = False
        inputs = inputs.masked_fill(drop, UNK)
    return inputs


class CharEncoder(nn.Module):
    """GRU over a word's characters; its state at the end symbol gives q(z|x).

    :param int latent_dim: size of z.
    """

    def __init__(self, latent_dim: int, embed_dim: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, embed_dim)
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(M, 2 * latent_dim)`` of q(z|x) (see :meth:`dist`) for long
        codes ``x`` ``(M, L)``. The GRU runs left to right, so its state at
        the end symbol has read the word and none of the padding."""
        states, _ = self.gru(self.embed(x))
        return self.head(states[torch.arange(len(x), device=x.device), padding_mask(x).sum(-1) - 1])

    @staticmethod
    def dist(features: torch.Tensor):
        """q(z|x) = N(loc, diag scale^2) from ``features`` ``(*batch, 2 * latent_dim)``:
        loc, and the scale before a softplus."""
        loc, raw = features.chunk(2, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)


class CharDecoder(nn.Module):
    """GRU over the previous characters, optionally conditioned on z (the
    initial state ``tanh(A z)`` and z beside every input).

    :param int latent_dim: size of z (0: an unconditioned language model).
    """

    def __init__(self, latent_dim: int, embed_dim: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(VOCAB_SIZE, embed_dim)
        self.init = nn.Linear(latent_dim, hidden) if latent_dim else None
        self.gru = nn.GRU(embed_dim + latent_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, VOCAB_SIZE)

    def _start(self, z: Optional[torch.Tensor], m: int, device) -> torch.Tensor:
        if z is None:
            return torch.zeros(1, m, self.gru.hidden_size, device=device)
        return torch.tanh(self.init(z)).unsqueeze(0)

    def _inputs(self, tokens: torch.Tensor, z: Optional[torch.Tensor]) -> torch.Tensor:
        e = self.embed(tokens)
        if z is None:
            return e
        return torch.cat([e, z.unsqueeze(1).expand(-1, e.shape[1], -1)], -1)

    def forward(self, inputs: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``(M, L, VOCAB_SIZE)`` of each next character, for input
        codes ``(M, L)`` long and ``z`` ``(M, latent_dim)`` (None without one)."""
        states, _ = self.gru(self._inputs(inputs, z), self._start(z, len(inputs), inputs.device))
        return self.out(states)

    @torch.no_grad()
    def decode(self, z: Optional[torch.Tensor], m: int, length: int, greedy: bool = True) -> torch.Tensor:
        """``m`` words as float codes ``(m, length)``, one character at a time:
        the most probable (``greedy``) or a draw. PAD and UNK are never
        emitted, the last position is always the end symbol, and after the
        end symbol comes padding."""
        device = self.out.weight.device
        h = self._start(z, m, device)
        token = torch.full((m, 1), END, dtype=torch.long, device=device)
        out = torch.full((m, length), PAD, dtype=torch.long, device=device)
        done = torch.zeros(m, dtype=torch.bool, device=device)
        for t in range(length):
            state, h = self.gru(self._inputs(token, z), h)
            logits = self.out(state[:, 0])
            logits[:, [PAD, UNK]] = -torch.inf
            if t == length - 1:
                logits[:, END + 1:] = -torch.inf  # a word has at most length - 1 characters
            token = logits.argmax(-1, keepdim=True) if greedy else torch.multinomial(logits.softmax(-1), 1)
            out[:, t] = torch.where(done, torch.full_like(token[:, 0], PAD), token[:, 0])
            done |= token[:, 0] == END
        return out.to(torch.get_default_dtype())


def _flat(x: torch.Tensor, z: Optional[torch.Tensor]):
    """``x`` ``(B, L)`` broadcast to z's leading dims ``(..., B)`` and both
    flattened to ``M`` rows; returns ``(x (M, L), z (M, d) or None, leading dims)``."""
    batch = x.shape[:-1] if z is None else torch.broadcast_shapes(x.shape[:-1], z.shape[:-1])
    xm = x.expand(batch + x.shape[-1:]).reshape(-1, x.shape[-1])
    zm = None if z is None else z.expand(batch + z.shape[-1:]).reshape(-1, z.shape[-1])
    return xm, zm, batch


def _max_length(family: str, data_shape) -> int:
    """The longest word that data of shape ``data_shape`` = ``(max_length + 1,)`` holds."""
    if len(data_shape) != 1 or data_shape[0] < 2:
        raise ConfigError(f"model {family!r} reads words of shape (max_length + 1,), got data of shape "
                          f"{tuple(data_shape)}; use the words data source (data.name: words)")
    return int(data_shape[0]) - 1


class WordCompletion(TorchDistribution):
    """The hidden characters of words, drawn left to right from the decoder
    given the observed codes and z: a hidden position gets a character from
    p(x_t | x_<t, z) renormalised over the characters (never PAD, END or UNK:
    a word's length is observed), an observed position keeps its code. A
    value is the completed words, float codes ``(*batch, L)``; ``log_prob``
    sums the renormalised log probabilities of the hidden positions.

    :param words: the text model (its ``logits``).
    :param codes: long ``(B, L)``; ``hidden``: bool ``(B, L)``; ``z``: ``(*batch, d)`` or None.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, words, codes: torch.Tensor, hidden: torch.Tensor, z: Optional[torch.Tensor]):
        self.words, self.codes, self.hidden, self.z = words, codes, hidden, z
        batch = codes.shape[:-1] if z is None else torch.broadcast_shapes(codes.shape[:-1], z.shape[:-1])
        super().__init__(batch, codes.shape[-1:], validate_args=False)

    def _char_log_probs(self, filled: torch.Tensor, z: Optional[torch.Tensor]) -> torch.Tensor:
        logits = self.words.logits(filled, z)
        return logits.masked_fill(torch.arange(VOCAB_SIZE, device=logits.device) < FIRST_CHAR, -torch.inf).log_softmax(-1)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        filled = self.codes.expand(shape).to(torch.get_default_dtype()).clone()
        hidden = self.hidden.expand(shape)
        z = None if self.z is None else self.z.expand(shape[:-1] + self.z.shape[-1:])
        for t in hidden.reshape(-1, shape[-1]).any(0).nonzero()[:, 0].tolist():  # the decoder is causal
            p = self._char_log_probs(filled, z)[..., t, :].exp()
            draw = torch.multinomial(p.reshape(-1, VOCAB_SIZE), 1).reshape(p.shape[:-1]).to(filled.dtype)
            filled[..., t] = torch.where(hidden[..., t], draw, filled[..., t])
        return filled

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        picked = self._char_log_probs(value, self.z).gather(-1, value.long().unsqueeze(-1))[..., 0]
        return picked.masked_fill(~self.hidden, 0.0).sum(-1)


class _Words(LatentVariableModel):
    """What the text models share: the decoder, the masked observation, the
    checks and ``to_text``; the device, registration and data plate come
    from :class:`~pyrovae.models.family.LatentVariableModel`."""

    def __init__(self, max_length: int, word_dropout: float, decoder: CharDecoder):
        super().__init__((max_length + 1,))
        if not 0.0 <= word_dropout < 1.0:
            raise ConfigError(f"model.options.word_dropout must lie in [0, 1), got {word_dropout}")
        self.word_dropout = float(word_dropout)
        self.decoder = decoder

    def logits(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Next-character logits ``(*batch, L, VOCAB_SIZE)`` for codes ``x``
        ``(B, L)`` and ``z`` ``(*batch, latent_dim)`` (``*batch`` ends in B;
        None for the language model); word dropout while training."""
        xm, zm, batch = _flat(x.long(), z)
        inputs = word_dropout_inputs(xm, self.word_dropout if self.training else 0.0)
        return self.decoder(inputs, zm).reshape(batch + x.shape[-1:] + (VOCAB_SIZE,))

    def scored(self, codes: torch.Tensor) -> torch.Tensor:
        """Bool ``codes.shape``: the positions the likelihood scores, the
        characters and the end symbol (:func:`~pyrovae.data.words.padding_mask`)."""
        return padding_mask(codes)

    #: imputation's hidden characters are drawn left to right, a proposal only: importance sampling weighs them
    impute_methods = ("importance",)

    def _observe(self, x: torch.Tensor, z: Optional[torch.Tensor], obs_mask: Optional[torch.Tensor] = None) -> None:
        codes = x.long()
        if obs_mask is None:
            p = dist.Categorical(logits=self.logits(x, z)).mask(self.scored(codes)).to_event(1)
            pyro.sample("x", p, obs=codes)
            return
        # Imputation: the observed characters and end symbol are scored, the
        # hidden characters are drawn (x_unobserved), and "each hidden
        # position holds a character" is observed as a factor.
        hidden = self._hidden(codes, obs_mask)
        codes = codes.masked_fill(hidden, FIRST_CHAR)  # hidden values are never read
        filled = pyro.sample("x_unobserved", WordCompletion(self, codes, hidden, z))
        logits = self.logits(filled, z)
        pyro.sample("x_observed", dist.Categorical(logits=logits).mask(self.scored(codes) & ~hidden).to_event(1),
                    obs=filled.long())
        is_char = logits[..., FIRST_CHAR:].logsumexp(-1) - logits.logsumexp(-1)
        pyro.factor("x_hidden_are_characters", is_char.masked_fill(~hidden, 0.0).sum(-1))
        pyro.deterministic("x_mean", F.one_hot(filled.long(), VOCAB_SIZE).to(x.dtype), event_dim=2)
        pyro.deterministic("x", filled.to(x.dtype), event_dim=1)

    def _hidden(self, codes: torch.Tensor, obs_mask: torch.Tensor) -> torch.Tensor:
        """Bool ``codes.shape``: the hidden characters; a word's end symbol and padding must be observed."""
        obs_mask = torch.as_tensor(obs_mask, dtype=torch.bool, device=codes.device).expand(codes.shape)
        chars = padding_mask(torch.where(obs_mask, codes, FIRST_CHAR)) & (~obs_mask | (codes != END))
        if bool((~obs_mask & ~chars).any()) or not bool((obs_mask & (codes == END)).any(-1).all()):
            raise DataError("obs_mask hides the end symbol or padding of a word; a word's length is observed "
                            "and only its characters can be hidden (impute_mask(x, mask) makes such a mask)")
        return ~obs_mask

    def impute_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` ``(N, L)`` (True = observed) with each word's end symbol
        and padding observed: imputation fills in characters of a word whose
        length is known."""
        return mask | ~(padding_mask(x) & (x != END))

    def impute_point(self, predictive: torch.Tensor) -> torch.Tensor:
        """The most probable code at each position of ``predictive``
        ``(*batch, L, VOCAB_SIZE)`` (class probabilities): float codes ``(*batch, L)``."""
        return predictive.argmax(-1).to(predictive.dtype)

    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`~pyrovae.errors.DataError` unless ``x`` is ``(N, L)``
        whole codes in range, each row characters, one end symbol, then padding."""
        if not isinstance(x, torch.Tensor):
            raise DataError(f"{what} must be a torch.Tensor of character codes, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.data_shape:
            raise DataError(f"{what} points have shape {tuple(x.shape[1:])} but the model was built for words "
                            f"of shape {self.data_shape}; use data.options.max_length={self.data_shape[0] - 1}")
        if not len(x):
            return
        if not bool(torch.isfinite(x).all()) or bool((x != x.round()).any()):
            raise DataError(f"{what} must hold whole character codes (pyrovae.data.words); found fractions, "
                            "NaN or inf; use the words data source with data.binarize: none")
        if bool(((x < 0) | (x >= VOCAB_SIZE) | (x == UNK)).any()):
            raise DataError(f"{what} holds codes outside 0..{VOCAB_SIZE - 1} or the UNK code {UNK}; "
                            "encode words with pyrovae.data.words.encode_words")
        ends = (x == END).sum(-1)
        pad_before_end = ((x == PAD) & padding_mask(x)).any(-1)
        char_after_end = ((x != PAD) & ~padding_mask(x)).any(-1)
        bad = (ends != 1) | pad_before_end | char_after_end
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise DataError(f"{what} row {i} is not a word (characters, one end symbol {END}, then padding "
                            f"{PAD}): {x[i].long().tolist()}")

    def to_text(self, x: torch.Tensor) -> List[str]:
        """The words of codes ``(N, L)``: characters up to the end symbol."""
        return decode_words(x)


class TextVAE(_Words):
    """Bowman et al.'s sequence VAE over the characters of a word.

    :param int max_length: the longest word, in characters (data shape ``(max_length + 1,)``).
    :param int latent_dim: size of z.
    :param int embed_dim: size of the character embeddings.
    :param int hidden: size of the GRU states.
    :param float word_dropout: probability of replacing each decoder input by UNK while training.
    """

    family = "text_vae"

    def __init__(self, max_length: int, latent_dim: int = 16, embed_dim: int = 32, hidden: int = 128,
                 word_dropout: float = 0.0):
        super().__init__(max_length, word_dropout, CharDecoder(latent_dim, embed_dim, hidden))
        self.latent_dim = latent_dim
        self.encoder = CharEncoder(latent_dim, embed_dim, hidden)

    @classmethod
    def _build(cls, config, data_shape, **options):
        return cls(_max_length(cls.family, data_shape), config.latent_dim, **options)

    def prior(self):
        """p(z) = N(0, I): event shape ``(latent_dim,)``."""
        zero = self.decoder.out.weight.new_zeros(self.latent_dim)
        return dist.Normal(zero, 1.0).to_event(1)

    def encode(self, x: torch.Tensor):
        """q(z|x) for codes ``x`` ``(N, L)``: batch ``(N,)``, event ``(latent_dim,)``."""
        return self.encoder.dist(self.encoder(x.long()))

    def local_guide(self, x: torch.Tensor):
        """The ``local_guide`` capability (:func:`~pyrovae.inference_gaps`):
        ``({"z": features}, guide_fn)``, the encoder's features ``(N, 2 *
        latent_dim)`` (loc and the scale before its softplus) detached, free
        per point, and ``guide_fn(params, x, **kwargs)``, a Pyro guide that
        draws ``z`` from the Normal they give in the data plate."""
        with torch.no_grad():
            params = {"z": self.encoder(x.long()).detach().clone()}

        def guide_fn(params, x, **kwargs):
            with self._data_plate(x, None):
                pyro.sample("z", self.encoder.dist(params["z"]))

        return params, guide_fn

    def model(self, x: torch.Tensor, *, num_data: Optional[int] = None, beta: float = 1.0,
              obs_mask: Optional[torch.Tensor] = None):
        """p(z) p(x|z) for codes ``x`` ``(B, L)``; ``beta`` weighs the latent
        site; ``obs_mask`` ``(B, L)`` (True = observed) hides characters."""
        self._register(decoder=self.decoder)
        with self._data_plate(x, num_data):
            with kl_scale(beta):
                z = pyro.sample("z", self.prior())
            self._observe(x, z, obs_mask)

    def guide(self, x: torch.Tensor, *, num_data: Optional[int] = None, beta: float = 1.0):
        """q(z|x); the arguments of :meth:`model`."""
        self._register(encoder=self.encoder)
        with self._data_plate(x, num_data):
            with kl_scale(beta):
                pyro.sample("z", self.encode(x))

    def prior_draws(self, n: int) -> torch.Tensor:
        """``n`` codes ``(n, latent_dim)`` from p(z)."""
        return self.prior().sample((n,))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The greedy decoding of each code ``z`` ``(*batch, latent_dim)``: ``(*batch, L)`` float codes."""
        flat = z.reshape(-1, self.latent_dim)
        return self.decoder.decode(flat, len(flat), self.data_shape[0]).reshape(z.shape[:-1] + self.data_shape)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` words ``(n, L)`` from z ~ p(z): greedy (``mean``) or drawn character by character."""
        return self.decoder.decode(self.prior_draws(n), n, self.data_shape[0], greedy=mean)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The greedy decoding of the guide's mean code of each word: ``x.shape``."""
        return self.decode_mean(self.encode(x).mean)

    def reconstruction_errors(self, x: torch.Tensor, x_rec: torch.Tensor):
        """``{"char_error_rate": (N,)}``: the share of each word's characters
        and end symbol (codes ``(N, L)``) that ``x_rec`` gets wrong."""
        scored = padding_mask(x)
        return {"char_error_rate": ((x_rec != x) & scored).sum(-1).to(x.dtype) / scored.sum(-1)}


class CharLM(_Words):
    """The :class:`TextVAE`'s decoder alone: a character language model
    without a latent, whose log p(x) is exact (importance sampling returns
    it for any K). It takes no ``beta``: there is no latent site to weigh.

    :param int max_length: the longest word, in characters.
    """

    family = "char_lm"

    def __init__(self, max_length: int, embed_dim: int = 32, hidden: int = 128, word_dropout: float = 0.0):
        super().__init__(max_length, word_dropout, CharDecoder(0, embed_dim, hidden))

    @classmethod
    def _build(cls, config, data_shape, **options):
        return cls(_max_length(cls.family, data_shape), **options)

    def model(self, x: torch.Tensor, *, num_data: Optional[int] = None, obs_mask: Optional[torch.Tensor] = None):
        """p(x) = prod_t p(x_t | x_<t) for codes ``x`` ``(B, L)``; ``obs_mask`` as :meth:`TextVAE.model`'s."""
        self._register(decoder=self.decoder)
        with self._data_plate(x, num_data):
            self._observe(x, None, obs_mask)

    def guide(self, x: torch.Tensor, *, num_data: Optional[int] = None):
        """Nothing to infer."""

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` words ``(n, L)``: the single most probable path (``mean``; every row alike) or draws."""
        return self.decoder.decode(None, n, self.data_shape[0], greedy=mean)


@register_model("text_vae")
def build_text_vae(config, data_shape, embed_dim=32, hidden=128, word_dropout=0.0):
    """Bowman et al.'s sequence VAE over characters (``model.latent_dim``):
    GRU encoder, GRU decoder conditioned on z, word dropout."""
    return TextVAE.from_config(config, data_shape, embed_dim=embed_dim, hidden=hidden, word_dropout=word_dropout)


@register_model("char_lm")
def build_char_lm(config, data_shape, embed_dim=32, hidden=128, word_dropout=0.0):
    """The text_vae's GRU decoder as a character language model, without a latent."""
    return CharLM.from_config(config, data_shape, embed_dim=embed_dim, hidden=hidden, word_dropout=word_dropout)
