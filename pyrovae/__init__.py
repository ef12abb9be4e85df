"""pyrovae: variational autoencoders written the Pyro way."""

from .config import Config, DataConfig, ModelConfig, TrainConfig, load_config
from .infer.evaluate import evaluate, log_likelihood
from .infer.ais import ais_log_likelihood, bdmc
from .infer.gaps import inference_gaps
from .errors import CheckpointError, ConfigError, DataError, OutOfMemoryError, PyrovaeError, RunDirError, TrainingDiverged
from .components.guides import GuideFamily, register_guide
from .components.likelihoods import Likelihood, register_likelihood
from .models.vae import VAE
from .models.helpers import kl_scale, observe
from .models import build_model, register_model
from .components.nets import register_decoder, register_encoder
from .components.priors import Prior, register_prior
from .runs import load_run
from .training.trainer import Trainer, train
from .data import load_data, register_dataset
from .infer.impute import impute
from .report.latents import draw_samples, encode_data
from .report.probe import latent_probe

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "register_model",
    "build_model",
    "kl_scale",
    "observe",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "load_config",
    "Prior",
    "Likelihood",
    "GuideFamily",
    "register_prior",
    "register_likelihood",
    "register_encoder",
    "register_decoder",
    "register_guide",
    "register_dataset",
    "train",
    "Trainer",
    "load_run",
    "load_data",
    "log_likelihood",
    "ais_log_likelihood",
    "bdmc",
    "inference_gaps",
    "evaluate",
    "draw_samples",
    "encode_data",
    "impute",
    "latent_probe",
    "PyrovaeError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunDirError",
    "OutOfMemoryError",
    "TrainingDiverged",
]
