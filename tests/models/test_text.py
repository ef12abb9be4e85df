"""The text models (text_vae, char_lm) and the words data source.

The oracle of the likelihood is a GRU written out by hand from the
decoder's weights (the gate equations of torch.nn.GRU), scored with
log_softmax over the true next characters up to and including each word's
end symbol, where the length comes from the word itself.
"""

import math
import pickle

import pytest
import torch

import pyro
import pyro.poutine as poutine
from pyro.util import check_model_guide_match

import pyrovae
from pyrovae.data.words import (
    END, FIRST_CHAR, PAD, UNK, VOCAB_SIZE, decode_words, encode_words, padding_mask, word_lengths, words,
)
from pyrovae.errors import ConfigError, DataError
from pyrovae.infer.weights import trace_pair, weight_terms
from pyrovae.models.text import word_dropout_inputs
from pyrovae.runs import RunDir, load_checkpoint
from pyrovae.training.trainer import Trainer

from helpers import assert_identical, without_seconds

WORDS = ["cat", "horse", "a", "zebra", "tiger", "ox", "lynx", "emu", "mouse", "owl", "bee", "yak"]
MAX_LENGTH = 6
TINY = {"embed_dim": 5, "hidden": 7}
#: words for the data source: 64 made-up words, so the tests need no package
VOCABULARY = sorted({"".join("abcdefgh"[(i * 7 + j * 3) % 8] for j in range(1 + i % 5)) + str(i) for i in range(64)})


def build(name="text_vae", max_length=MAX_LENGTH, latent_dim=3, **options):
    cfg = pyrovae.load_config({"model": {"name": name, "latent_dim": latent_dim, "options": {**TINY, **options}}})
    return pyrovae.build_model(cfg.model, data_shape=(max_length + 1,))


def hand_log_prob(decoder, word_list, z=None):
    """log p(word | z) of each word, ``(len(word_list),)``: a GRU step by step
    from the decoder's weights, the start symbol END, log_softmax of each true
    next character and of the end symbol, nothing after it."""
    gru = decoder.gru
    w_ih, w_hh, b_ih, b_hh = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    out = []
    for i, word in enumerate(word_list):
        codes = [ord(c) - 32 + 3 for c in word] + [END]  # the code table: printable ASCII from code 3
        zi = None if z is None else z[i]
        h = torch.zeros(gru.hidden_size) if zi is None else torch.tanh(decoder.init.weight @ zi + decoder.init.bias)
        previous, total = END, torch.zeros(())
        for code in codes:
            e = decoder.embed.weight[previous]
            inp = e if zi is None else torch.cat([e, zi])
            gi, gh = w_ih @ inp + b_ih, w_hh @ h + b_hh
            r = torch.sigmoid(gi[: gru.hidden_size] + gh[: gru.hidden_size])
            u = torch.sigmoid(gi[gru.hidden_size : 2 * gru.hidden_size] + gh[gru.hidden_size : 2 * gru.hidden_size])
            n = torch.tanh(gi[2 * gru.hidden_size :] + r * gh[2 * gru.hidden_size :])
            h = (1 - u) * n + u * h
            total = total + torch.log_softmax(decoder.out.weight @ h + decoder.out.bias, -1)[code]
            previous = code
        out.append(total)
    return torch.stack(out)


def model_log_lik(model, x, z=None):
    """log p(x | z) per word from the model's Pyro trace, ``z`` fixed."""
    fn = model.model if z is None else poutine.condition(model.model, data={"z": z})
    site = poutine.trace(fn).get_trace(x).nodes["x"]
    return site["fn"].log_prob(site["value"])


def test_masked_likelihood_equals_a_hand_written_gru():
    vae = build().eval()
    x = encode_words(WORDS, MAX_LENGTH)
    z = torch.randn(len(WORDS), 3)
    with torch.no_grad():
        assert torch.allclose(model_log_lik(vae, x, z), hand_log_prob(vae.decoder, WORDS, z), atol=1e-5)


def test_char_lm_likelihood_and_importance_sampling_are_exact():
    lm = build("char_lm").eval()
    x = encode_words(WORDS, MAX_LENGTH)
    with torch.no_grad():
        exact = hand_log_prob(lm.decoder, WORDS)
    assert torch.allclose(model_log_lik(lm, x), exact, atol=1e-5)
    for k in (1, 7):  # no latent: every importance weight is p(x)
        assert torch.allclose(pyrovae.log_likelihood(lm, x, num_samples=k, seed=0), exact, atol=1e-5)
    summary = pyrovae.evaluate(lm, x, num_samples=3).summary()  # nats per word
    assert summary["log_likelihood"] == pytest.approx(float(exact.mean()), abs=1e-5)
    assert summary["kl"] == 0 and summary["active_units"] is None


def test_padding_counts_for_nothing():
    vae = build().eval()
    x = encode_words(WORDS, MAX_LENGTH)
    z = torch.randn(len(WORDS), 3)
    altered = torch.where(padding_mask(x), x, torch.randint(3, VOCAB_SIZE, x.shape).float())
    assert not torch.equal(altered, x)
    longer = build(max_length=MAX_LENGTH + 4).eval()
    longer.load_state_dict(vae.state_dict())  # the same networks, words padded to 4 more codes
    padded = torch.cat([x, torch.full((len(x), 4), float(PAD))], 1)
    with torch.no_grad():
        base = model_log_lik(vae, x, z)
        assert torch.allclose(model_log_lik(vae, altered, z), base, atol=1e-6)
        assert torch.allclose(model_log_lik(longer, padded, z), base, atol=1e-6)
        assert torch.allclose(vae.encode(altered).mean, vae.encode(x).mean, atol=1e-6)
        assert torch.allclose(longer.encode(padded).stddev, vae.encode(x).stddev, atol=1e-6)


def test_importance_weights_broadcast_over_particles():
    """The weights of K particles in one plate equal the hand-written GRU's,
    one particle at a time: log p(x | z_k) + log p(z_k) - log q(z_k | x)."""
    vae = build().eval()
    x = encode_words(WORDS[:5], MAX_LENGTH)
    with torch.no_grad():
        pair = trace_pair(vae, {"x": x}, num_particles=4)
        z = pair.guide.nodes["z"]["value"]
        assert z.shape == (4, 5, 3)
        log_w = weight_terms(pair).log_weight
        q = vae.encode(x)
        for k in range(4):
            prior = torch.distributions.Normal(0.0, 1.0).log_prob(z[k]).sum(-1)
            expected = hand_log_prob(vae.decoder, WORDS[:5], z[k]) + prior - q.log_prob(z[k])
            assert torch.allclose(log_w[k], expected, atol=1e-4)
    ll = pyrovae.log_likelihood(vae, x, num_samples=50, seed=0, batch_size=2, chunk_size=16)
    assert ll.shape == (5,) and bool(torch.isfinite(ll).all()) and bool((ll < 0).all())


@pytest.mark.parametrize("name", ["text_vae", "char_lm"])
def test_model_and_guide_traces_agree(name):
    model = build(name, word_dropout=0.3)
    x = encode_words(WORDS, MAX_LENGTH)
    keywords = {"beta": 0.5} if name == "text_vae" else {}  # char_lm has no latent site, so no beta
    guide = poutine.trace(model.guide).get_trace(x, **keywords)
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x, **keywords)
    check_model_guide_match(trace, guide)
    trace.compute_log_prob()
    assert trace.nodes["x"]["log_prob"].shape == (len(WORDS),)
    if name == "text_vae":
        assert trace.nodes["z"]["scale"] == guide.nodes["z"]["scale"] == 0.5  # the KL weight
        assert trace.nodes["z"]["value"] is guide.nodes["z"]["value"]
    else:
        assert [s for s in trace.stochastic_nodes if s != "data"] == []
    elbo = pyro.infer.Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(model.model, model.guide, x))


def test_word_dropout_only_while_training():
    x = torch.randint(3, VOCAB_SIZE, (400, 9))
    inputs = word_dropout_inputs(x, 0.5)
    assert bool((inputs[:, 0] == END).all())
    kept = inputs[:, 1:] != UNK
    assert torch.equal(inputs[:, 1:][kept], x[:, :-1][kept])
    assert 0.45 < float((~kept).float().mean()) < 0.55
    vae = build(word_dropout=0.5)
    words_x = encode_words(WORDS, MAX_LENGTH)
    z = torch.zeros(len(WORDS), 3)
    with torch.no_grad():
        vae.train()
        assert not torch.equal(vae.logits(words_x, z), vae.logits(words_x, z))
        vae.eval()
        assert torch.equal(vae.logits(words_x, z), vae.logits(words_x, z))


def test_to_text_and_decoding():
    x = encode_words(WORDS, MAX_LENGTH)
    assert decode_words(x) == WORDS
    assert word_lengths(x).tolist() == [len(w) for w in WORDS]
    vae = build()
    assert vae.to_text(x) == WORDS
    for mean in (True, False):
        drawn = vae.sample(20, mean=mean)
        assert drawn.shape == (20, MAX_LENGTH + 1) and drawn.dtype == x.dtype
        vae.check_data(drawn, "samples")  # a word each: characters, one end symbol, padding
        assert all(len(w) <= MAX_LENGTH for w in vae.to_text(drawn))
    assert vae.reconstruct(x).shape == x.shape
    assert vae.decode_mean(torch.zeros(2, 3, 3)).shape == (2, 3, MAX_LENGTH + 1)
    assert vae.prior_draws(4).shape == (4, 3)
    lm = build("char_lm")
    assert len(set(lm.to_text(lm.sample(5, mean=True)))) == 1  # no latent: one most probable path


@pytest.mark.parametrize("bad, message", [
    (lambda x: x + 0.5, "whole character codes"),
    (lambda x: x.index_fill(1, torch.tensor([0]), float(UNK)), "UNK"),
    (lambda x: x.index_fill(1, torch.tensor([MAX_LENGTH]), float(END)), "not a word"),  # a second end symbol
    (lambda x: torch.where(x == END, torch.full_like(x, 5.0), x), "not a word"),  # no end symbol
    (lambda x: x.index_fill(1, torch.tensor([0]), float(PAD)), "not a word"),  # padding before the end
    (lambda x: x[:, :-1], "shape"),
])
def test_check_data_refuses_what_is_not_a_word(bad, message):
    x = encode_words(["ab", "cde"], MAX_LENGTH)
    with pytest.raises(DataError, match=message):
        build().check_data(bad(x), "data")


@pytest.mark.parametrize("name", ["text_vae", "char_lm"])
def test_images_are_refused_with_the_source_to_use(name):
    cfg = pyrovae.load_config({"model": {"name": name}})
    with pytest.raises(ConfigError, match="words data source"):
        pyrovae.build_model(cfg.model, data_shape=(1, 28, 28))


@pytest.fixture
def word_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(VOCABULARY + ["averyveryverylongword"]) + "\n")
    return path


def test_the_split_is_fixed_by_its_seed_and_disjoint(word_file):
    a = words(path=str(word_file), max_length=8, num_test=10, split_seed=0)
    b = words(path=str(word_file), max_length=8, num_test=10, split_seed=0)
    c = words(path=str(word_file), max_length=8, num_test=10, split_seed=1)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[0], b.test[0])
    assert not torch.equal(a.test[0], c.test[0])
    train, test = set(decode_words(a.train[0])), set(decode_words(a.test[0]))
    assert len(test) == 10 and not train & test and train | test == set(VOCABULARY)  # the long word is dropped
    cfg = pyrovae.load_config({"data": {"name": "words", "path": str(word_file), "binarize": "none", "val_size": 8,
                                        "options": {"max_length": 8, "num_test": 10}}})
    splits = pyrovae.load_data(cfg.data)
    val = set(decode_words(splits.val[0]))
    assert len(val) == 8 and not val & test and not val & set(decode_words(splits.train[0]))
    assert splits.train[0].dtype == torch.float32 and splits.data_shape == (9,)


def test_a_missing_word_package_says_how_to_install_it(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match="pip install --no-deps english-words"):
        words()


def test_word_lists_are_read_without_running_code(tmp_path):
    from pyrovae.data.words import _SetUnpickler

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(print))  # a global, not a set of strings
    with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match="refusing"):
        _SetUnpickler(f).load()
    path.write_bytes(pickle.dumps({"cat", "dog"}))
    with open(path, "rb") as f:
        assert _SetUnpickler(f).load() == {"cat", "dog"}


def _sections(word_file, epochs=2):
    return {
        "data": {"name": "words", "path": str(word_file), "binarize": "none", "val_size": 8,
                 "options": {"max_length": 8, "num_test": 10}},
        "model": {"name": "text_vae", "latent_dim": 2, "options": {**TINY, "word_dropout": 0.3}},
        "train": {"epochs": epochs, "batch_size": 16, "progress": False, "device": "cpu", "seed": 0,
                  "kl_schedule": {"name": "linear", "warmup_epochs": 1.5}, "optimizer": {"name": "adam", "lr": 0.01}},
    }


def _setup(word_file, seed=0):
    cfg = pyrovae.load_config(_sections(word_file))
    splits = pyrovae.load_data(cfg.data)
    pyro.set_rng_seed(seed)
    return cfg, splits, pyrovae.build_model(cfg.model, splits.data_shape)


def test_trains_and_resumes_exactly(word_file, tmp_path):
    """Two epochs straight equal one epoch, a checkpoint and a resume (word
    dropout draws and the KL warm-up carry across the cut)."""
    cfg, splits, vae = _setup(word_file)
    full = RunDir.create(tmp_path / "full")
    history = Trainer(vae, splits, cfg, run_dir=full.path).fit()
    assert [r["epoch"] for r in history] == [1, 2] and 0 < history[0]["beta"] < 1 == history[1]["beta"]
    assert all(math.isfinite(r["val_loss"]) for r in history)

    cfg, splits, vae = _setup(word_file)
    part = RunDir.create(tmp_path / "part")
    Trainer(vae, splits, cfg, run_dir=part.path).fit(max_epochs=1)
    _, splits, fresh = _setup(word_file, seed=123)
    resumed = pyrovae.train(fresh, splits, cfg, run_dir=part.path, resume=True)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(part.checkpoint)
    for key in ("model", "optimizer", "rng", "step"):
        assert_identical(a[key], b[key], key)
    assert without_seconds(resumed) == without_seconds(a["history"])

    ev = pyrovae.evaluate(fresh, splits.test[0], num_samples=20)
    s = ev.summary()  # nats per word: -log p(x) of a word is at least 0, at most L log V with an untrained model
    assert 0 < -s["log_likelihood"] < 9 * math.log(VOCAB_SIZE) and s["log_likelihood"] >= s["elbo"]
    assert s["latent_units"] == 2 and s["num_points"] == 10


# -- imputation of hidden characters -------------------------------------------


def _peaked(name, latent_dim=1):
    """A tiny model with sharp next-character distributions that depend on z."""
    model = build(name, latent_dim=latent_dim).eval()
    with torch.no_grad():
        model.decoder.out.weight.mul_(10.0)
        if model.decoder.init is not None:
            model.decoder.init.weight.mul_(10.0)
    return model


def exact_character_posterior(model, x, h, latent):
    """p(x_h = c | the other codes of the word ``x`` ``(1, L)``) for every
    code c ``(VOCAB_SIZE,)``, zero off the characters: each candidate word
    scored from the decoder's logits, the 1-D latent (``latent``) integrated on a grid."""
    candidates = torch.arange(FIRST_CHAR, VOCAB_SIZE)
    words_c = x.repeat(len(candidates), 1)
    words_c[:, h] = candidates.float()
    z = torch.linspace(-7, 7, 1401).reshape(-1, 1, 1).expand(-1, len(candidates), 1) if latent else None
    with torch.no_grad():
        logits = model.logits(words_c, z)  # (G, C, L, V) or (C, L, V)
        log_p = logits.log_softmax(-1).gather(-1, words_c.long().expand(logits.shape[:-1]).unsqueeze(-1))[..., 0]
        log_p = (log_p * padding_mask(words_c)).sum(-1)
        if z is not None:
            log_p = (log_p + torch.distributions.Normal(0.0, 1.0).log_prob(z[..., 0])).logsumexp(0)
    out = torch.zeros(VOCAB_SIZE)
    out[candidates] = log_p.softmax(-1)
    return out


@pytest.mark.parametrize("name", ["text_vae", "char_lm"])
def test_imputed_character_distribution_is_the_exact_posterior(name):
    """One hidden character: the importance-weighted predictive equals the
    posterior computed by enumerating the candidates (and integrating z),
    and the point estimate is its most probable character."""
    model = _peaked(name)
    x = encode_words(["horse"], MAX_LENGTH)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, 2] = False
    result = pyrovae.impute(model, x, mask, method={"name": "importance", "num_particles": 20000}, seed=0)
    exact = exact_character_posterior(model, x, 2, latent=name == "text_vae")
    estimate = result.predictive[0, 2]
    assert float(estimate.sum()) == pytest.approx(1.0, abs=1e-4) and float(estimate[:FIRST_CHAR].sum()) == 0
    assert 0.5 * float((estimate - exact).abs().sum()) < 0.06  # total variation; Monte Carlo error only
    assert exact.max() > 2 * exact[FIRST_CHAR:].mean()  # the posterior is far from flat
    assert int(result.mean[0, 2]) == int(exact.argmax())
    assert torch.equal(result.mean[mask], x[mask])


@pytest.mark.parametrize("name", ["text_vae", "char_lm"])
def test_imputation_keeps_what_is_observed_and_the_length(name):
    """Observed characters come back unchanged; a mask that hides the end
    symbol or padding keeps them observed (the length is known); hidden
    codes are never read; gibbs is refused with the imputer to use."""
    model = build(name, latent_dim=2).eval()
    x = encode_words(WORDS, MAX_LENGTH)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    result = pyrovae.impute(model, x, mask, method={"name": "importance", "num_particles": 8})
    chars = padding_mask(x) & (x != END)
    assert torch.equal(result.mask, mask | ~chars)
    for estimate in (result.mean, result.draw):
        assert torch.equal(estimate[result.mask], x[result.mask])
        model.check_data(estimate, "imputed words")  # words again: characters, one end symbol, padding
        assert torch.equal(word_lengths(estimate), word_lengths(x))
        assert bool((estimate[~result.mask] >= FIRST_CHAR).all())
    scrambled = torch.where(result.mask, x, torch.randint(FIRST_CHAR, VOCAB_SIZE, x.shape).float())
    again = pyrovae.impute(model, scrambled, mask, method={"name": "importance", "num_particles": 8})
    assert torch.equal(again.mean, result.mean) and torch.equal(again.draw, result.draw)
    with pytest.raises(ConfigError, match="'gibbs' imputer does not apply; use importance"):
        pyrovae.impute(model, x, mask, method="gibbs")
    with pytest.raises(DataError, match="length is observed"):
        model.model(x, obs_mask=mask)  # the end symbol hidden without impute_mask


def test_impute_command_prints_its_table_for_a_text_run(word_file, tmp_path, capsys):
    import json

    import yaml

    from pyrovae.cli import main

    config = tmp_path / "text.yaml"
    config.write_text(yaml.safe_dump(_sections(word_file, epochs=1)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["impute", str(run), "--mask", "random:0.5", "--particles", "20", "--show", "3"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run / "imputation" / "imputation-random-0.5.json").read_text())
    assert "error rate of the imputation" in out and f"{100 * report['error_rate_imputation']:.1f}%" in out
    test_words = decode_words(pyrovae.load_data(pyrovae.load_config(_sections(word_file)).data).test[0])
    assert 0 < report["hidden_elements"] < sum(map(len, test_words))  # characters only, about half
    assert 0 <= report["error_rate_imputation"] <= 1 and "mse_imputation" not in report
    shown = (run / "imputation" / "imputation-random-0.5.txt").read_text()
    assert shown.count("truth:") == 3 and f"truth:    {test_words[0]}" in shown
    assert main(["impute", str(run), "--mask", "random:0.5", "--method", "gibbs"]) == 2
    assert "use importance" in capsys.readouterr().err
