"""Training machinery that knows no model family: config, optimizers and schedules, the trainer,
the training state in checkpoints, data parallelism under torchrun, devices and seeds."""

from dia_ode.engine.config import (COMPILE_MODES, OPTIMIZERS, PRECISIONS, SCHEDULES, ConfigError, TrainConfig,
                                   apply_recipe, recipe_config)
from dia_ode.engine.device import peak_memory_mb, resolve_device
from dia_ode.engine.distributed import DistContext, from_environment, unwrap
from dia_ode.engine.optim import build_optimizer, learning_rate
from dia_ode.engine.seeding import epoch_generator, seed_everything
from dia_ode.engine.start import train
from dia_ode.engine.trainer import (ResumeMismatch, RunFinished, Trainer, TrainingDiverged, build_model, nfe_means,
                                    resume_training, run_training)
from dia_ode.tasks import model_spec  # re-exported: what a checkpoint's model_spec is

__all__ = ["COMPILE_MODES", "ConfigError", "DistContext", "OPTIMIZERS", "PRECISIONS", "ResumeMismatch", "RunFinished", "SCHEDULES", "TrainConfig", "Trainer", "TrainingDiverged", "apply_recipe",
           "build_model", "build_optimizer", "epoch_generator", "from_environment", "learning_rate", "model_spec",
           "nfe_means", "peak_memory_mb", "recipe_config", "resolve_device", "resume_training", "run_training", "seed_everything",
           "train", "unwrap"]
