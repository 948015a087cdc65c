"""Training (Chapter 5).

Modules::

    objectives  causal LM, masked LM (80/10/10), next-sentence pairs, span corruption
    optim       SGD, Adam, AdamW from scratch; clipping; weight-decay groups
    schedule    the learning-rate schedule: linear warm-up, then cosine
    config      TrainConfig (causal or masked objective), presets (tiny, cpu, draft, gpu, mlm)
    step        the loss, the optimiser, THE training step and THE loop of steps (run_steps)
    loop        THE pretraining loop (GPT and masked LM), weight averaging, perplexity
    history     what a run records
    checkpoint  save and resume a run exactly
    ddp         data-parallel training over torchrun (``python -m llmbook.train.ddp``)
    command     the options the training command lines share
    mlm         the masked LM's tokenizer and evaluation (``course-mlm``)

``python -m llmbook.pretrain`` is the command line that trains a preset;
``python -m llmbook.pretrain_mlm`` trains the masked LM.
"""

from llmbook.train.checkpoint import load_checkpoint, save_checkpoint
from llmbook.train.config import OBJECTIVES, PRESETS, TrainConfig
from llmbook.train.history import History
from llmbook.train.loop import evaluate_perplexity, objective_loss, train, update_ema
from llmbook.train.mlm import (
    evaluate_mlm,
    mlm_tokenizer,
    most_frequent_tokens,
)
from llmbook.train.step import (
    autocast_context,
    cpu_has_bf16,
    lm_loss,
    lr_at,
    make_optimizer,
    run_steps,
    train_dtype,
    train_step,
)

__all__ = [
    "load_checkpoint",
    "save_checkpoint",
    "OBJECTIVES",
    "PRESETS",
    "TrainConfig",
    "History",
    "evaluate_perplexity",
    "objective_loss",
    "train",
    "update_ema",
    "evaluate_mlm",
    "mlm_tokenizer",
    "most_frequent_tokens",
    "autocast_context",
    "cpu_has_bf16",
    "lm_loss",
    "lr_at",
    "make_optimizer",
    "train_dtype",
    "train_step",
    "run_steps",
]
