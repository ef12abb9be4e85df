import pytest

from pyrovae.config import Config, load_config
from pyrovae.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = Config().override(["model.prior={name: mog, num_components: 7}", "train.beta=0.5", "data.subset=100"])
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    again = Config.from_yaml(path)
    assert again == cfg
    assert again.model.prior == {"name": "mog", "num_components": 7}
    assert again.train.beta == 0.5


def test_overrides_parse_yaml_values():
    cfg = Config().override(
        ["train.epochs=3", "train.optimizer.lr=3e-4", "model.encoder.hidden=[64, 32]", "model.prior.name=vamp", "train.patience=null"]
    )
    assert cfg.train.epochs == 3
    assert cfg.train.optimizer == {"name": "adam", "lr": 3e-4}
    assert cfg.model.encoder["hidden"] == [64, 32]
    assert cfg.model.prior["name"] == "vamp"
    assert cfg.train.patience is None


def test_component_may_be_given_by_name():
    cfg = load_config({"model": {"guide": "delta"}})
    assert cfg.model.guide == {"name": "delta"}


@pytest.mark.parametrize(
    "source, message",
    [
        ({"trian": {}}, "unknown key 'trian' in config. Did you mean 'train'"),
        ({"train": {"epoch": 3}}, "unknown key 'epoch' in train. Did you mean 'epochs'"),
        ({"train": {"epochs": "3"}}, "train.epochs must be of type int"),
        ({"train": {"epochs": -1}}, "train.epochs must be an integer >= 0"),
        ({"train": {"beta": -1.0}}, "train.beta must be a finite number >= 0"),
        ({"train": {"optimizer": {"name": "adam", "lr": float("nan")}}}, "lr must be a positive finite number"),
        ({"model": {"latent_dim": 0}}, "model.latent_dim must be an integer >= 1"),
        ({"model": {"prior": {"num_components": 3}}}, "must be a component name or a mapping with a 'name' key"),
        ({"data": {"binarize": "sometimes"}}, "data.binarize must be one of"),
        ({"train": {"device": "tpu"}}, "train.device must be"),
        ([1, 2], "cannot read a config from list"),
    ],
)
def test_bad_configs_fail_clearly(source, message):
    with pytest.raises(ConfigError) as e:
        load_config(source)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown key 'epoch' in train"),
        ("model.priors.name=vamp", "unknown key 'priors' in model"),
        ("epochs=3", "unknown key 'epochs' in config"),
        ("train.epochs", "must look like section.key=value"),
        ("train.epochs=[1", "does not parse as YAML"),
        ("train.epochs.x=1", "train.epochs is not a mapping"),
    ],
)
def test_bad_overrides_fail_clearly(override, message):
    with pytest.raises(ConfigError) as e:
        Config().override([override])
    assert message in str(e.value)


def test_unparsable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
