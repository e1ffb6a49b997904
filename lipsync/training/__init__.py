"""Training loops of the lip-sync models (entry points: ``python -m lipsync.train_syncnet``,
``python -m lipsync.train_reader`` and ``python -m lipsync.train``; data from
``python -m lipsync.preprocess``).

All run through :mod:`marlin.training` (Hugging Face Accelerate): the same command trains on a
CPU, one GPU or many (``accelerate launch`` / ``torchrun``), bf16 on GPUs, resumable atomic
checkpoints, NaN stop, progress bar, CSV + TensorBoard logs.
"""

from .generator_loop import GeneratorTrainConfig, train_generator
from .reader_loop import ReaderTrainConfig, evaluate_reader, train_reader
from .syncnet_loop import SyncTrainConfig, evaluate_expert, train_syncnet

__all__ = ["GeneratorTrainConfig", "ReaderTrainConfig", "SyncTrainConfig", "evaluate_expert",
           "evaluate_reader", "train_generator", "train_reader", "train_syncnet"]
