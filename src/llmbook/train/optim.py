"""Optimisers and the rest of the training recipe, built from scratch (Chapter 5).

Chapter 5 writes Adam inline; this file is the package copy, and
``tests/chapters/test_chapter05_optim.py`` checks that the two agree. ``tests/unit/train/test_optim.py``
checks every optimiser here step by step against ``torch.optim`` and the clipping
against ``torch.nn.utils.clip_grad_norm_``. The learning-rate schedule is
:mod:`llmbook.train.schedule`.

Contents:

* optimisers (subclasses of ``torch.optim.Optimizer``, so param groups, ``zero_grad``
  and ``state_dict`` / ``load_state_dict`` work as usual): ``SGD`` (with momentum,
  Nesterov momentum and L2 weight decay), ``Adam`` (L2 weight decay, as
  ``torch.optim.Adam``) and ``AdamW`` (decoupled weight decay, as
  ``torch.optim.AdamW``);
* ``clip_grad_norm``: rescale all gradients so that their joint L2 norm is at most
  ``max_norm``;
* regularisation: ``l1_penalty``, ``l2_penalty`` and
  ``param_groups_for_weight_decay`` (decay weight matrices, not biases or norms).

Which parameters are regularised
--------------------------------
One rule is used everywhere in this file: a parameter with ``dim >= 2`` (the weight
matrices of linear layers, the embedding tables, the output head) is decayed or
penalised; a parameter with ``dim < 2`` (biases, LayerNorm gains and shifts) is not.
This is the GPT-2 / nanoGPT convention. The reasons:

* weight decay pulls a parameter towards 0. For a weight matrix that is a sensible
  prior: small weights mean a smoother function, less overfitting. A bias or a
  LayerNorm shift is only an offset, and 0 is no more "simple" than any other offset;
* a LayerNorm gain multiplies a normalised activation: pulling it to 0 switches the
  feature off, which fights the normalisation instead of regularising anything;
* these vectors hold a tiny fraction of the parameters (a few thousand out of
  millions), so they cannot overfit much, and decaying them has been found to hurt
  slightly rather than help.

Embedding tables are 2-D and are therefore decayed, as in nanoGPT (GPT-2's token
embedding is tied to its output head, which is a weight matrix).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from llmbook.train.schedule import check_number

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "l1_penalty",
    "l2_penalty",
    "param_groups_for_weight_decay",
]

Params = Iterable[Tensor] | Iterable[dict]


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------


def _evaluate_closure(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """PyTorch's optimiser protocol: ``step(closure)`` re-evaluates the loss (with
    gradients on) before updating, and returns it."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class SGD(torch.optim.Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    Per parameter :math:`\theta` with gradient :math:`g_t` at step :math:`t`:

    .. math::

        g_t &\leftarrow g_t + \lambda\,\theta_{t-1}
            \quad\text{(L2 weight decay } \lambda\text{)} \\
        b_t &= \mu\, b_{t-1} + g_t \quad (b_1 = g_1) \\
        d_t &= g_t + \mu\, b_t \ \text{(Nesterov)} \quad\text{or}\quad d_t = b_t \\
        \theta_t &= \theta_{t-1} - \eta\, d_t

    With ``momentum=0`` the update is plain :math:`\theta \leftarrow \theta - \eta g`.
    The learning rate :math:`\eta` (``lr``) is in units of parameter per unit of
    gradient; ``momentum`` :math:`\mu` is dimensionless. This is exactly
    ``torch.optim.SGD`` with ``dampening=0``.

    Args:
        params: parameters, or a list of param-group dicts.
        lr: learning rate, ``>= 0``.
        momentum: momentum factor :math:`\mu \in [0, 1)`.
        weight_decay: L2 coefficient :math:`\lambda \ge 0`, added to the gradient.
        nesterov: use Nesterov momentum (needs ``momentum > 0``).
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        check_number("lr", lr, low=0.0, open_low=False)
        check_number("momentum", momentum, low=0.0, open_low=False)
        if momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        check_number("weight_decay", weight_decay, low=0.0, open_low=False)
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update every parameter that has a gradient; return ``closure()`` if given."""
        loss = _evaluate_closure(closure)
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    g = g.add(p, alpha=wd)
                if mu != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()
                    else:
                        state["momentum_buffer"].mul_(mu).add_(g)
                    buf = state["momentum_buffer"]
                    g = g.add(buf, alpha=mu) if nesterov else buf
                p.add_(g, alpha=-lr)
        return loss


# ---------------------------------------------------------------------------
# Adam and AdamW
# ---------------------------------------------------------------------------


class Adam(torch.optim.Optimizer):
    r"""Adam (Kingma & Ba, 2015), with L2 weight decay as in ``torch.optim.Adam``.

    Per parameter :math:`\theta` with gradient :math:`g_t` at step
    :math:`t = 1, 2, \dots` (the moments start at :math:`m_0 = v_0 = 0`):

    .. math::

        g_t &\leftarrow g_t + \lambda\,\theta_{t-1}
            \quad\text{(L2 weight decay, Adam only)} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_t = v_t / (1 - \beta_2^t) \\
        \theta_t &= \theta_{t-1} - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    :math:`m` is a running mean of the gradient (units of gradient), :math:`v` a
    running mean of its square (gradient squared); the ratio
    :math:`\hat m / \sqrt{\hat v}` is dimensionless and about 1 in size, so each
    coordinate moves by roughly ``lr`` per step whatever the scale of its gradient.
    The bias corrections undo the pull towards the zero initialisation of the
    moments: at :math:`t = 1`, :math:`\hat m_1 = g_1` and :math:`\hat v_1 = g_1^2`, so
    the first update is :math:`\eta\, g_1 / (|g_1| + \epsilon) \approx \pm\eta`.
    :math:`\epsilon` sits outside the square root, as in the paper and in PyTorch.

    ``AdamW`` is this class with decoupled weight decay (``decoupled_weight_decay``
    set to True); see its docstring for why the two differ.

    Args:
        params: parameters, or a list of param-group dicts.
        lr: learning rate :math:`\eta \ge 0` (units of parameter per step).
        betas: decay rates :math:`(\beta_1, \beta_2)`, each in ``[0, 1)``.
        eps: :math:`\epsilon > 0`, added to :math:`\sqrt{\hat v_t}`.
        weight_decay: :math:`\lambda \ge 0`.
    """

    #: False: weight decay is an L2 term added to the gradient (Adam);
    #: True: weight decay shrinks the parameter directly (AdamW).
    decoupled_weight_decay: bool = False

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        check_number("lr", lr, low=0.0, open_low=False)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            check_number(f"betas[{i}]", beta, low=0.0, open_low=False)
            if beta >= 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")
        check_number("eps", eps, low=0.0, open_low=True)
        check_number("weight_decay", weight_decay, low=0.0, open_low=False)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update every parameter that has a gradient; return ``closure()`` if given."""
        loss = _evaluate_closure(closure)
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:  # first step for this parameter
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)  # m
                    state["exp_avg_sq"] = torch.zeros_like(p)  # v
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                if wd != 0:
                    if self.decoupled_weight_decay:
                        p.mul_(1 - lr * wd)  # AdamW: shrink theta directly
                    else:
                        g = g.add(p, alpha=wd)  # Adam: L2 term in the gradient
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                p.addcdiv_(m_hat, v_hat.sqrt().add_(eps), value=-lr)
        return loss


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    Before the Adam step each parameter is shrunk directly,

    .. math::

        \theta \leftarrow \theta\,(1 - \eta\lambda),

    and the gradient fed to Adam is the loss gradient alone. This is
    ``torch.optim.AdamW``; the default ``weight_decay=0.01`` is also torch's.

    Why it differs from Adam's L2 decay: Adam divides every gradient coordinate by
    :math:`\sqrt{\hat v}`. An L2 term :math:`\lambda\theta` added to the gradient is
    divided too, so a weight whose gradients are large is barely decayed and a weight
    whose gradients are tiny is decayed by about ``lr`` per step, whatever
    :math:`\lambda` is. Decoupled decay shrinks every weight by the same factor, which
    is what "weight decay" is meant to do, and makes :math:`\lambda` and ``lr``
    separately tunable. GPT-2/3, LLaMA and most LLMs are trained with AdamW.
    """

    decoupled_weight_decay = True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ---------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------


def clip_grad_norm(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    *,
    error_if_nonfinite: bool = False,
) -> Tensor:
    r"""Scale all gradients in place so that their joint L2 norm is <= ``max_norm``.

    The total norm treats every gradient as one long vector,
    :math:`\|g\| = \sqrt{\sum_p \sum_i g_{p,i}^2}`. When it exceeds ``max_norm``
    every gradient is multiplied by ``max_norm / (||g|| + 1e-6)``, which keeps the
    direction of the update and caps its length; otherwise nothing changes.
    Parameters whose ``grad`` is None are skipped. Same behaviour (and the same
    ``1e-6``) as ``torch.nn.utils.clip_grad_norm_``.

    Args:
        parameters: a tensor or an iterable of tensors (e.g. ``model.parameters()``).
        max_norm: the largest allowed norm, ``> 0`` (units of gradient).
        error_if_nonfinite: raise when the norm is nan or inf (otherwise such a norm
            makes every gradient nan).

    Returns:
        The total norm *before* clipping: a 0-dim float tensor (0 when no gradients).
    """
    check_number("max_norm", max_norm, low=0.0, open_low=True)
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    per_param = torch.stack([torch.linalg.vector_norm(g.detach(), 2) for g in grads])
    total = torch.linalg.vector_norm(per_param, 2)
    if error_if_nonfinite and not torch.isfinite(total):
        raise RuntimeError(
            f"the total gradient norm is {total.item()}: cannot clip non-finite "
            "gradients (pass error_if_nonfinite=False to clip anyway)"
        )
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.detach().mul_(coef.to(g.dtype))
    return total


# ---------------------------------------------------------------------------
# Regularisation
# ---------------------------------------------------------------------------


def _penalised(model_or_params: nn.Module | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(model_or_params, nn.Module):
        return [p for p in model_or_params.parameters() if p.dim() >= 2]
    if isinstance(model_or_params, Tensor):
        return [model_or_params]
    return list(model_or_params)


def l1_penalty(model_or_params: nn.Module | Iterable[Tensor]) -> Tensor:
    r"""The L1 penalty :math:`\sum_w |w|` (a differentiable 0-dim tensor).

    For a module, the sum runs over its weight matrices (parameters with
    ``dim >= 2``: linear weights, embeddings), not its biases or LayerNorm
    parameters; see the module docstring for why. For a tensor or an iterable of
    tensors, every given tensor is included. Add ``lam * l1_penalty(model)`` to the
    loss; its gradient ``lam * sign(w)`` pushes weights to exactly 0 (sparsity).
    """
    tensors = _penalised(model_or_params)
    if not tensors:
        return torch.tensor(0.0)
    return torch.stack([t.abs().sum() for t in tensors]).sum()


def l2_penalty(model_or_params: nn.Module | Iterable[Tensor]) -> Tensor:
    r"""The L2 penalty :math:`\sum_w w^2` (a differentiable 0-dim tensor).

    Same parameters as ``l1_penalty``. Adding ``lam * l2_penalty(model)`` to the loss
    adds ``2 * lam * w`` to each gradient: with plain SGD that is weight decay with
    coefficient ``2 * lam``; with Adam it is *not* the same as AdamW's decoupled
    decay (see ``AdamW``).
    """
    tensors = _penalised(model_or_params)
    if not tensors:
        return torch.tensor(0.0)
    return torch.stack([t.square().sum() for t in tensors]).sum()


def param_groups_for_weight_decay(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split a model's trainable parameters into a decayed and a non-decayed group.

    Returns ``[{"params": [...], "weight_decay": weight_decay},
    {"params": [...], "weight_decay": 0.0}]``: parameters with ``dim >= 2`` (weight
    matrices, embeddings) are decayed; biases and LayerNorm parameters (``dim < 2``)
    are not, the GPT-2 / nanoGPT convention (reasons in the module docstring).
    Shared (tied) parameters appear once; frozen ones (``requires_grad=False``) are
    left out. Pass the result to an optimiser: ``AdamW(groups, lr=...)``.
    """
    check_number("weight_decay", weight_decay, low=0.0, open_low=False)
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
