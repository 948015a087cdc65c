"""Direct preference optimisation (DPO; Rafailov et al., 2023), from scratch (Chapter 7).

A preference pair is one prompt with a *chosen* and a *rejected* answer. DPO trains a
policy model pi directly on such pairs, with a frozen copy of the starting model as
the reference, and no reward model and no sampling::

    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))

where ``pi_c`` is the log-probability of the chosen answer under the policy (the sum
over the answer's tokens, the prompt's tokens left out), ``ref_c`` the same under the
reference, and ``pi_r``, ``ref_r`` likewise for the rejected answer. ``beta`` sets how
far the policy may move from the reference: the implicit reward of an answer is
``beta * (pi - ref)``, and the loss is the logistic loss of the chosen answer's reward
beating the rejected one's.

``tests/unit/finetune/test_dpo.py`` checks hand-computed cases, the gradient's direction and size,
and that only answer tokens count in :func:`sequence_log_prob`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from llmbook.model.scoring import target_log_probs

__all__ = ["dpo_loss", "preference_margin", "sequence_log_prob"]


def sequence_log_prob(logits: Tensor, targets: Tensor, answer_mask: Tensor) -> Tensor:
    """Sum of the log-probabilities of the answer tokens of each sequence.

    logits: (batch, seq, vocab) next-token logits; targets: (batch, seq) the token
    that follows each position; answer_mask: (batch, seq), 1/True where the target is
    an answer token (prompt and padding 0). Returns (batch,) log-probabilities in nats.
    """
    if logits.dim() != 3:
        raise ValueError(
            f"logits must be (batch, seq, vocab), got {tuple(logits.shape)}"
        )
    if targets.shape != logits.shape[:2] or answer_mask.shape != targets.shape:
        raise ValueError(
            f"targets and answer_mask must be (batch, seq) = "
            f"{tuple(logits.shape[:2])}, got {tuple(targets.shape)} and "
            f"{tuple(answer_mask.shape)}"
        )
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"targets must be integer token ids, got {targets.dtype}")
    return target_log_probs(logits.float(), targets, answer_mask)  # (batch,)


def _check(beta: float, *logps: Tensor) -> None:
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta <= 0:
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    shapes = {tuple(t.shape) for t in logps}
    if len(shapes) != 1:
        raise ValueError(
            f"the four log-probabilities must have one shape (batch,), got {shapes}"
        )


def preference_margin(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
) -> Tensor:
    """``beta * ((pi_c - ref_c) - (pi_r - ref_r))`` per pair: (batch,).

    Positive when the policy has raised the chosen answer relative to the rejected
    one, compared with the reference; the share of positive margins on held-out
    pairs is DPO's *preference accuracy*.
    """
    _check(beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
) -> Tensor:
    """The mean DPO loss ``-log sigmoid(margin)`` over a batch of pairs (a scalar).

    All four arguments are (batch,) sequence log-probabilities
    (:func:`sequence_log_prob`); the reference ones carry no gradient in training.
    ``-log sigmoid(x)`` is computed as ``softplus(-x)``, which stays finite for large
    margins of either sign.
    """
    margin = preference_margin(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta
    )
    return F.softplus(-margin).mean()
