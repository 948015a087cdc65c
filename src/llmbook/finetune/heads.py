"""Task heads on top of an encoder (Chapter 7): classification and regression.

An encoder such as the course's :class:`~llmbook.model.MaskedLM` turns (batch, seq)
ids into hidden states (batch, seq, d_model) (its ``encode``). A sequence task
needs one vector per sequence, so the states are *pooled*:

* ``"mean"``: the average over the real tokens (padding, ``attention_mask == 0``,
  left out), what sentence encoders such as MiniLM use;
* ``"first"``: the state of the first position (BERT's ``[CLS]`` convention; the
  sequence must start with a real token there).

A linear layer then maps the pooled (batch, d_model) vector onto ``n_classes``
logits (:class:`SequenceClassifier`, cross-entropy loss) or ``n_outputs`` numbers
(:class:`SequenceRegressor`, mean-squared-error loss). ``freeze_encoder=True`` trains
the head alone: a *linear probe*, which measures what the frozen features already
know.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["pool", "SequenceClassifier", "SequenceRegressor"]

POOLINGS = ("mean", "first")


def pool(
    hidden: Tensor, attention_mask: Tensor | None = None, how: str = "mean"
) -> Tensor:
    """(batch, seq, d_model) hidden states -> (batch, d_model), see the module doc.

    attention_mask: (batch, seq), 1 = real token, 0 = padding (None: all real).
    """
    if how not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")
    if hidden.dim() != 3:
        raise ValueError(
            f"hidden must be (batch, seq, d_model), got {tuple(hidden.shape)}"
        )
    if attention_mask is not None and attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask must be (batch, seq) = {tuple(hidden.shape[:2])}, got "
            f"{tuple(attention_mask.shape)}"
        )
    if how == "first":
        return hidden[:, 0]  # (batch, d_model)
    if attention_mask is None:
        return hidden.mean(dim=1)
    keep = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)
    n_real = keep.sum(dim=1)  # (batch, 1)
    if bool((n_real == 0).any()):
        raise ValueError("a sequence has no real tokens: mean pooling is undefined")
    return (hidden * keep).sum(dim=1) / n_real  # (batch, d_model)


class _PooledHead(nn.Module):
    """encoder.encode -> pool -> dropout -> Linear(d_model, n_out)."""

    def __init__(
        self,
        encoder: nn.Module,
        n_out: int,
        pooling: str,
        dropout: float,
        freeze_encoder: bool,
    ) -> None:
        super().__init__()
        if not hasattr(encoder, "encode"):
            raise TypeError(
                f"{type(encoder).__name__} has no encode(idx, attention_mask) method "
                "returning (batch, seq, d_model) hidden states"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.encoder, self.pooling = encoder, pooling
        if freeze_encoder:
            for p in encoder.parameters():
                p.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        d_model = encoder.config.d_model
        param = next(encoder.parameters())
        self.head = nn.Linear(d_model, n_out).to(param.device, param.dtype)

    def features(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The pooled encoder output: (batch, seq) -> (batch, d_model)."""
        hidden = self.encoder.encode(idx, attention_mask)  # (batch, seq, d_model)
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(batch, seq) ids -> (batch, n_out)."""
        return self.head(self.dropout(self.features(idx, attention_mask)))


class SequenceClassifier(_PooledHead):
    """Encoder + pooling + a linear layer onto ``n_classes`` logits.

    forward(idx (batch, seq), attention_mask (batch, seq) or None)
    -> logits (batch, n_classes); :meth:`loss` is the mean cross-entropy.
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_classes: int,
        pooling: str = "mean",
        *,
        dropout: float = 0.0,
        freeze_encoder: bool = False,
    ) -> None:
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        super().__init__(encoder, n_classes, pooling, dropout, freeze_encoder)
        self.n_classes = n_classes

    def loss(
        self, idx: Tensor, labels: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        """Mean cross-entropy of the logits against integer ``labels`` (batch,)."""
        if labels.shape != idx.shape[:1]:
            raise ValueError(
                f"labels must be (batch,) = ({idx.shape[0]},), got {tuple(labels.shape)}"
            )
        return F.cross_entropy(self(idx, attention_mask), labels)

    @torch.no_grad()
    def predict(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The most likely class of each sequence: (batch,) integers."""
        return self(idx, attention_mask).argmax(dim=-1)


class SequenceRegressor(_PooledHead):
    """Encoder + pooling + a linear layer onto ``n_outputs`` real numbers.

    forward(idx (batch, seq), attention_mask (batch, seq) or None) -> (batch,) when
    ``n_outputs == 1``, else (batch, n_outputs); :meth:`loss` is the mean squared
    error.
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_outputs: int = 1,
        pooling: str = "mean",
        *,
        dropout: float = 0.0,
        freeze_encoder: bool = False,
    ) -> None:
        if not isinstance(n_outputs, int) or n_outputs < 1:
            raise ValueError(f"n_outputs must be a positive integer, got {n_outputs!r}")
        super().__init__(encoder, n_outputs, pooling, dropout, freeze_encoder)
        self.n_outputs = n_outputs

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = super().forward(idx, attention_mask)  # (batch, n_outputs)
        return out.squeeze(-1) if self.n_outputs == 1 else out

    def loss(
        self, idx: Tensor, targets: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        """Mean squared error against ``targets`` shaped like the output."""
        pred = self(idx, attention_mask)
        if targets.shape != pred.shape:
            raise ValueError(
                f"targets must have the output's shape {tuple(pred.shape)}, got "
                f"{tuple(targets.shape)}"
            )
        return F.mse_loss(pred, targets.to(pred.dtype))
