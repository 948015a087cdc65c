"""The pretraining loop (Chapter 5): batches, steps, evaluation, checkpoints.

Chapter 5 writes this loop inline first and then imports this copy; later chapters,
``python -m llmbook.pretrain`` (the GPT) and ``python -m llmbook.pretrain_mlm`` (the
masked LM, ``TrainConfig(objective="masked")``) use it. It steps through
:func:`~llmbook.train.step.run_steps`, the loop of :func:`~llmbook.train.step.train_step`
that instruction tuning and the translator use too, and adds what a pretraining run
needs after each step: the weight average, the history, evaluation, checkpoints. The
objective only changes the loss (:func:`objective_loss`), the window length and the
validation score.

Determinism: the batch order comes from its own seeded ``torch.Generator``, dropout
from the seeded global RNG, so a run repeats bit for bit on the same machine with the
same number of threads.

Perplexity is measured the way Chapter 1 measured the n-gram baseline
(:data:`llmbook.data.NGRAM_BASELINE`): per BPE token of the course tokenizer on the
validation documents, counting one end-of-document prediction per document, so the
two numbers can be compared directly.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from llmbook.data.batching import CourseData, window_iterator
from llmbook.model.bert import MaskedLM
from llmbook.model.gpt import GPT
from llmbook.model.scoring import target_log_probs
from llmbook.train.checkpoint import load_checkpoint, save_checkpoint
from llmbook.train.config import TrainConfig
from llmbook.train.history import History
from llmbook.train.mlm import evaluate_mlm
from llmbook.train.objectives import mlm_loss
from llmbook.train.step import (
    autocast_context,
    lm_loss,
    lr_at,
    make_optimizer,
    run_steps,
    train_dtype,
)

__all__ = ["History", "update_ema", "evaluate_perplexity", "objective_loss", "train"]


@torch.no_grad()
def update_ema(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * model``, parameter by parameter.

    Averaging the weights of the last few hundred steps cancels much of the noise of
    the individual steps (Polyak averaging); the average usually scores better on
    held-out text than the last iterate, most of all while the learning rate is
    still high.
    """
    for avg, param in zip(average.parameters(), model.parameters(), strict=True):
        avg.lerp_(param.detach(), 1.0 - decay)


@torch.no_grad()
def evaluate_perplexity(
    model: nn.Module,
    docs: Sequence[Sequence[int]],
    eos_id: int,
    *,
    stride: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> float:
    """Perplexity per token of ``docs``, on the n-gram baseline's terms.

    The stream ``EOS doc0 EOS doc1 EOS ...`` is scored left to right, so every token of
    every document and one EOS per document is predicted exactly once (the leading EOS
    plays the n-gram's ``<s>``). Windows of ``context_length`` tokens advance by
    ``stride`` (default half the context); each window scores only its last ``stride``
    targets, so every prediction sees at least ``context_length - stride`` tokens of
    context, except at the very start.
    """
    config = model.config
    ctx = config.context_length
    stride = ctx // 2 if stride is None else stride
    if not 1 <= stride <= ctx:
        raise ValueError(f"stride must be in [1, context_length={ctx}], got {stride}")
    if not docs:
        raise ValueError("docs is empty: nothing to evaluate")
    device = next(model.parameters()).device if device is None else torch.device(device)
    stream = [eos_id]
    for doc in docs:
        stream.extend(doc)
        stream.append(eos_id)
    data = torch.tensor(stream, dtype=torch.long)
    n_targets = len(stream) - 1  # target t is data[t + 1], predicted from data[: t + 1]
    windows = []  # (start, first scored offset, length)
    scored = 0
    while scored < n_targets:
        start = max(0, min(scored + stride - ctx, n_targets - ctx))
        end = min(start + ctx, n_targets)
        windows.append((start, scored - start, end - start))
        scored = end
    was_training = model.training
    model.eval()
    total_nll, count = 0.0, 0
    try:
        for i in range(0, len(windows), batch_size):
            chunk = windows[i : i + batch_size]
            length = max(n for _, _, n in chunk)
            x = torch.full((len(chunk), length), eos_id, dtype=torch.long)
            y = torch.full((len(chunk), length), -100, dtype=torch.long)
            for row, (start, first, n) in enumerate(chunk):
                x[row, :n] = data[start : start + n]
                y[row, first:n] = data[start + first + 1 : start + n + 1]
            logits = model(x.to(device)).float()  # (batch, length, vocab_size)
            y = y.to(device)
            logp = target_log_probs(logits, y, y != -100)  # (batch,), -100: unscored
            total_nll -= logp.sum().item()
            count += int((y != -100).sum())
    finally:
        model.train(was_training)
    if count != n_targets:  # every prediction exactly once
        raise RuntimeError(f"scored {count} targets, expected {n_targets}")
    return math.exp(total_nll / count)


def objective_loss(
    config: TrainConfig, step: int, eos_id: int
) -> Callable[[nn.Module, Tensor], Tensor]:
    """The loss :func:`~llmbook.train.step.train_step` minimises at optimiser step
    ``step`` (0-based) of a run with ``config``.

    Causal: :func:`~llmbook.train.step.lm_loss`. Masked: BERT's loss
    (:func:`~llmbook.train.objectives.mlm_loss`; each non-EOS token chosen with
    ``config.mask_prob``, 80/10/10), its masking drawn from a generator seeded with
    the run's seed and the step, so that a resumed run masks exactly as one run
    straight through would.
    """
    if config.objective == "causal":
        return lm_loss
    masking = torch.Generator().manual_seed(config.seed * 1_000_003 + step)

    def loss(model: nn.Module, batch: Tensor) -> Tensor:
        return mlm_loss(
            model, batch, mask_id=config.mask_id,
            vocab_size=config.model.vocab_size,  # as Hugging Face's len(tokenizer)
            special_ids=(eos_id,), mask_prob=config.mask_prob, generator=masking,
        )  # fmt: skip

    return loss


def with_aux(
    loss_fn: Callable[[nn.Module, Tensor], Tensor],
    model: nn.Module,
    aux_loss: Callable[[nn.Module], Tensor] | None,
) -> Callable[[nn.Module, Tensor], Tensor]:
    """``loss_fn`` plus ``aux_loss(model)`` (read after the forward pass), or
    ``loss_fn`` itself when there is no auxiliary loss."""
    if aux_loss is None:
        return loss_fn
    return lambda forward, batch: loss_fn(forward, batch) + aux_loss(model)


def validation_score(model: nn.Module, data: CourseData, config: TrainConfig) -> float:
    """What a run reports at each evaluation: perplexity per token of the validation
    documents (causal, :func:`evaluate_perplexity`), or over their masked tokens
    under one fixed masking (masked, :func:`~llmbook.train.mlm.evaluate_mlm`)."""
    if config.objective == "causal":
        return evaluate_perplexity(model, data.val_docs, data.eos_id)
    scores = evaluate_mlm(model, data.val_docs, eos_id=data.eos_id,
                          mask_id=config.mask_id)  # fmt: skip
    return scores["perplexity"]


def train(
    model: GPT | MaskedLM,
    data: CourseData,
    config: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    steps: int | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    callback: Callable[[int, History], None] | None = None,
    progress: bool = True,
    cpu_bf16: bool = False,
    aux_loss: Callable[[nn.Module], Tensor] | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
) -> History:
    """Train ``model`` on ``data`` with ``config``; returns the :class:`History`.

    A GPT with ``config.objective == "causal"`` (windows of ``context_length + 1``
    tokens, inputs and shifted targets), or a :class:`~llmbook.model.MaskedLM` with
    ``"masked"`` (windows of ``context_length`` tokens, BERT's masking); the history's
    ``val_perplexity`` is :func:`validation_score`.

    Args:
        steps: stop after this optimiser step (default ``config.max_steps``); the
            schedule still follows ``max_steps``, so a run stopped early and resumed
            equals one run straight through.
        checkpoint_path: write a checkpoint there at every evaluation and at the end.
        resume: continue from ``checkpoint_path`` (model, optimiser, step, RNG).
        callback: called as ``callback(step, history)`` after every evaluation (the
            chapter's live plot).
        progress: show a ``tqdm`` bar with the running loss.
        cpu_bf16: on a CPU with bf16 units (:func:`~llmbook.train.step.cpu_has_bf16`)
            run the forward pass under bf16 autocast (``python -m llmbook.pretrain``
            does by default); elsewhere on the CPU it trains in fp32 regardless.
        aux_loss: a term added to every micro-batch's loss, computed from ``model``
            after its forward pass (a mixture of experts' load-balancing loss,
            Chapter 10).
        on_step: called as ``on_step(step, model)`` after every optimiser step
            (``step`` 0-based; Chapter 10 records the experts' load there).

    With ``config.ema_decay > 0`` the run keeps an exponential moving average of the
    weights (:func:`update_ema`), the validation perplexity is the average's, and on
    return ``model`` holds the averaged weights (checkpoints keep both).
    On a CUDA device the forward pass runs under autocast (bfloat16 where supported,
    else float16 with a ``GradScaler``); ``config.compile`` wraps the model in
    ``torch.compile``.
    """
    device = torch.device(device)
    if model.config != config.model:
        raise ValueError(
            f"the model's config {model.config} differs from the run's "
            f"config.model {config.model}"
        )
    model.to(device)
    optimizer = make_optimizer(model, config)
    history = History()
    start = 0
    ema = None
    if config.ema_decay > 0:
        ema = copy.deepcopy(model).requires_grad_(False)
    if resume:
        if checkpoint_path is None or not Path(checkpoint_path).exists():
            raise FileNotFoundError(
                f"resume=True but no checkpoint at {checkpoint_path}"
            )
        start, history = load_checkpoint(checkpoint_path, model, optimizer, ema)
    stop = config.max_steps if steps is None else min(steps, config.max_steps)
    dtype = train_dtype(device, cpu_bf16)
    # window_iterator yields L + 1 tokens; an encoder needs no shifted targets
    window = config.model.context_length - (config.objective == "masked")
    windows = window_iterator(
        data.train_stream, window, config.batch_size, config.seed,
        start * config.grad_accum,
    )  # fmt: skip
    clock = [time.perf_counter()]

    def after_step(step: int, loss: float) -> dict[str, str] | None:
        if on_step is not None:
            on_step(step, model)
        if ema is not None:
            update_ema(ema, model, config.ema_decay)
        history.step.append(step + 1)
        history.loss.append(loss)
        history.lr.append(lr_at(step, config))
        history.tokens += config.tokens_per_step
        done = step + 1
        if done % config.eval_every != 0 and done != stop:
            return None
        history.seconds += time.perf_counter() - clock[0]
        ppl = validation_score(model if ema is None else ema, data, config)
        history.eval_step.append(done)
        history.val_perplexity.append(ppl)
        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path, model, optimizer, done, config, history, ema
            )
        if callback is not None:
            callback(done, history)
        clock[0] = time.perf_counter()
        return {"val_ppl": f"{ppl:.1f}"}

    run_steps(
        model,
        optimizer,
        (batch.to(device, non_blocking=True) for batch in windows),
        stop=stop,
        lr=lambda step: lr_at(step, config),
        loss_at=lambda step: with_aux(
            objective_loss(config, step, data.eos_id), model, aux_loss
        ),
        start=start,
        grad_accum=config.grad_accum,
        grad_clip=config.grad_clip,
        scaler=torch.amp.GradScaler("cuda") if dtype == torch.float16 else None,
        autocast=lambda: autocast_context(device, cpu_bf16),
        forward=torch.compile(model) if config.compile else None,
        after_step=after_step,
        progress=progress,
        desc=config.objective,
    )
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    return history
