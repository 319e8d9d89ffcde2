"""Training, behind train.py.

  config             the YAML config tree (TrainConfig)
  trainset           data preparation, splits and statistics
  graph_cache        the training set's graphs, built once and cached beside the data file
  metrics            loss and error metrics
  captured_step      the padded training step, captured in a CUDA graph per bucket
  schedule           warmup, learning-rate schedulers, stage two and the stop rule
  evaluation         validation and final evaluation passes
  energy_offsets     least-squares refit of the per-element energy offsets
  checkpoint         atomic checkpoints; run_dir: the output folder and metrics.csv
  finetune           init_from and freeze; committee_training: bootstrap committees
  trainer            the epoch loop that ties them together (Trainer, run)
"""

from .config import ConfigError, TrainConfig, load_config
from .trainer import Trainer, TrainingError, run

__all__ = ["ConfigError", "TrainConfig", "load_config", "Trainer", "TrainingError", "run"]
