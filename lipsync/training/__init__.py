"""Training loops of the lip-sync models (entry points: ``python -m lipsync.train_syncnet`` and
``python -m lipsync.train``; data from ``python -m lipsync.preprocess``).

Both run through :mod:`marlin.training` (Hugging Face Accelerate): the same command trains on a
CPU, one GPU or many (``accelerate launch`` / ``torchrun``), bf16 on GPUs, resumable atomic
checkpoints, NaN stop, progress bar, CSV + TensorBoard logs.
"""

from .generator_loop import GeneratorTrainConfig, train_generator
from .syncnet_loop import SyncTrainConfig, evaluate_expert, train_syncnet

__all__ = ["GeneratorTrainConfig", "SyncTrainConfig", "evaluate_expert", "train_generator", "train_syncnet"]
