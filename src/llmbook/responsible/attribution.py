"""Looking inside the course GPT (Chapter 13): attributions, the logit lens, probes.

* :func:`residual_stream` runs a :class:`~llmbook.model.GPT` from token embeddings
  (so gradients can flow to them) and keeps every layer's residual stream and
  attention weights (the model's ``output_hidden_states`` and ``output_attentions``);
* :func:`gradient_x_input` and :func:`integrated_gradients` (Sundararajan et al.,
  2017) attribute a scalar output to the input's entries; IG satisfies *completeness*:
  its attributions sum to ``f(x) - f(baseline)`` up to the error of the Riemann sum;
* :func:`logit_lens` reads every layer's residual stream through the final LayerNorm
  and the LM head (nostalgebraist, 2020); at the last layer it is the model's output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "residual_stream",
    "logits_from_embeddings",
    "gradient_x_input",
    "integrated_gradients",
    "logit_lens",
]

RULES = ("left", "right", "midpoint", "trapezoid")


def _check_gpt(model: nn.Module) -> None:
    for name in ("tok_emb", "pos_emb", "blocks", "ln_f", "lm_head"):
        if not hasattr(model, name):
            raise TypeError(f"expected a llmbook GPT (it has no {name!r}), got "
                            f"{type(model).__name__}")  # fmt: skip


def residual_stream(
    model: nn.Module, tok_embeds: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """Run ``model`` (a llmbook ``GPT``) from token embeddings.

    Args:
        tok_embeds: (batch, seq, d_model), e.g. ``model.tok_emb(idx)``.

    Returns:
        ``(states, attentions)``: ``n_layers + 1`` residual streams (batch, seq,
        d_model), the first after the embeddings, then after each block; and
        ``n_layers`` attention weights (batch, n_heads, seq, seq).
    """
    _check_gpt(model)
    d_model = model.config.d_model
    if tok_embeds.dim() != 3 or tok_embeds.shape[-1] != d_model:
        raise ValueError(f"tok_embeds must have shape (batch, seq, {d_model}), "
                         f"got {tuple(tok_embeds.shape)}")  # fmt: skip
    out = model(
        inputs_embeds=tok_embeds, output_hidden_states=True, output_attentions=True
    )
    return list(out.hidden_states), list(out.attentions)


def logits_from_embeddings(model: nn.Module, tok_embeds: Tensor) -> Tensor:
    """The GPT's logits (batch, seq, vocab) computed from token embeddings."""
    _check_gpt(model)
    return model(inputs_embeds=tok_embeds)


def logit_lens(model: nn.Module, idx: Tensor) -> Tensor:
    """Every layer's residual stream read as logits: (n_layers + 1, batch, seq,
    vocab). Entry 0 reads the embeddings, entry ``l`` the output of block ``l``; the
    last entry equals ``model(idx)``."""
    _check_gpt(model)
    with torch.no_grad():
        states = model(idx, output_hidden_states=True).hidden_states
        return torch.stack([model.lm_head(model.ln_f(h)) for h in states])


def gradient_x_input(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``x * df/dx`` for a scalar-valued ``f``; same shape as ``x``."""
    x = x.detach().clone().requires_grad_(True)
    out = f(x)
    if out.numel() != 1:
        raise ValueError(f"f must return a scalar, got shape {tuple(out.shape)}")
    (grad,) = torch.autograd.grad(out.sum(), x)
    return (grad * x).detach()


def integrated_gradients(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    baseline: Tensor | None = None,
    steps: int = 64,
    rule: str = "midpoint",
    batch_size: int = 64,
) -> Tensor:
    """Integrated gradients of ``f`` at ``x`` from ``baseline`` (zeros by default).

    ``IG_i = (x_i - b_i) * integral_0^1 df/dx_i (b + a (x - b)) da``, the integral
    replaced by a Riemann sum with ``steps`` points (``rule``: left, right, midpoint or
    trapezoid). ``f`` maps a batch of path points (k, *x.shape) to (k,) outputs.
    Returns a tensor shaped like ``x``.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    baseline = torch.zeros_like(x) if baseline is None else baseline
    if baseline.shape != x.shape:
        raise ValueError(f"baseline shape {tuple(baseline.shape)} != x shape "
                         f"{tuple(x.shape)}")  # fmt: skip
    k = torch.arange(steps + (rule == "trapezoid"), dtype=x.dtype, device=x.device)
    if rule == "left":
        alphas, weights = k / steps, torch.full_like(k, 1 / steps)
    elif rule == "right":
        alphas, weights = (k + 1) / steps, torch.full_like(k, 1 / steps)
    elif rule == "midpoint":
        alphas, weights = (k + 0.5) / steps, torch.full_like(k, 1 / steps)
    else:
        alphas, weights = k / steps, torch.full_like(k, 1 / steps)
        weights[0] = weights[-1] = 0.5 / steps
    x, baseline = x.detach(), baseline.detach()
    total = torch.zeros_like(x)
    view = (-1,) + (1,) * x.dim()
    for start in range(0, len(alphas), batch_size):
        a = alphas[start : start + batch_size].view(view)
        points = (baseline + a * (x - baseline)).requires_grad_(True)
        out = f(points)
        if out.shape != (len(a),):
            raise ValueError(
                f"f must map (k, *x.shape) to (k,), got {tuple(out.shape)}"
            )
        (grad,) = torch.autograd.grad(out.sum(), points)
        total += (grad * weights[start : start + batch_size].view(view)).sum(dim=0)
    return (x - baseline) * total
