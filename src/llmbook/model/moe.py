"""Mixture-of-experts feed-forward layers (Chapter 10).

A mixture-of-experts (MoE) layer replaces a block's one feed-forward network by
``n_experts`` of them and a router, a linear map that scores every expert for every
token. Each token goes to its ``top_k`` best experts only, and their outputs are
mixed with the router's renormalised probabilities (the *gates*). Here:

- ``top_k_gates``: top-k routing, gates renormalised to sum to 1 (Mixtral) or not
  (Switch Transformer's top-1 keeps the raw probability);
- ``balance_loss``: the Switch Transformer load-balancing loss ``N sum_i f_i P_i``;
- ``router_z_loss``: ST-MoE's ``mean(logsumexp(logits)^2)``;
- ``expert_capacity`` and ``capacity_mask``: capacity-limited dispatch; a token that
  finds its expert full is *dropped* (the layer adds nothing, the residual carries it);
- ``MoEFeedForward``: the layer, with GELU experts (the course FFN) or SwiGLU experts
  (Mixtral), optional noisy top-k gating (Shazeer et al., 2017);
- ``moe_gpt``: the course GPT with every block's FFN swapped for an MoE layer, and
  ``moe_aux_loss`` / ``moe_counts`` to train and measure it.

``tests/unit/model/test_moe.py`` checks the layer against ``transformers``'
``MixtralSparseMoeBlock`` and the losses and capacity rule against its Switch
Transformers code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmbook.model.gpt import GPT, GPTConfig, count_parameters, model_flops_per_token
from llmbook.model.init import init_normal_
from llmbook.model.layers import FeedForward

__all__ = [
    "MoEConfig",
    "Routing",
    "SwiGLU",
    "MoEFeedForward",
    "top_k_gates",
    "balance_loss",
    "router_z_loss",
    "expert_capacity",
    "capacity_mask",
    "moe_gpt",
    "moe_layers",
    "moe_aux_loss",
    "moe_parameter_counts",
    "moe_flops_per_token",
]

EXPERTS = ("gelu", "swiglu")


class SwiGLU(nn.Module):
    """A gated feed-forward network: ``down(silu(gate(x)) * up(x))``, no biases.

    The expert of Llama and Mixtral. x: (..., d_model) -> (..., d_model).
    """

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (..., d_model)


def top_k_gates(
    probs: Tensor, k: int, renormalize: bool = True
) -> tuple[Tensor, Tensor]:
    """The ``k`` most probable experts of each token and their gates.

    probs: (tokens, n_experts), rows summing to 1. Returns ``gates`` (tokens, k),
    the chosen probabilities divided by their sum when ``renormalize`` (so each row
    sums to 1), and ``index`` (tokens, k) long, best expert first.
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be (tokens, n_experts), got {tuple(probs.shape)}")
    if not 1 <= k <= probs.shape[-1]:
        raise ValueError(f"k must be in [1, n_experts={probs.shape[-1]}], got {k}")
    gates, index = torch.topk(probs, k, dim=-1)  # (tokens, k) each
    if renormalize:
        gates = gates / gates.sum(dim=-1, keepdim=True)
    return gates, index


def balance_loss(probs: Tensor, index: Tensor, n_experts: int | None = None) -> Tensor:
    """Switch Transformer's load-balancing loss, ``N * sum_i f_i * P_i``.

    probs: (tokens, N) router probabilities; index: (tokens, k) chosen experts.
    ``f_i`` is the share of the ``tokens * k`` assignments that go to expert i (a
    count: no gradient), ``P_i`` the mean router probability of expert i (the part
    that carries the gradient). Equal to 1 when both are uniform; grows towards N as
    routing collapses onto one expert. (``transformers``' Mixtral version divides the
    counts by ``tokens`` only, so it returns ``k`` times this.)
    """
    n_experts = probs.shape[-1] if n_experts is None else n_experts
    if probs.ndim != 2 or probs.shape[-1] != n_experts:
        raise ValueError(
            f"probs must be (tokens, n_experts={n_experts}), got {tuple(probs.shape)}"
        )
    if index.ndim != 2 or index.shape[0] != probs.shape[0]:
        raise ValueError(
            f"index must be (tokens={probs.shape[0]}, k), got {tuple(index.shape)}"
        )
    counts = torch.zeros(n_experts, device=probs.device, dtype=probs.dtype)
    counts = counts.scatter_add(
        0, index.flatten(), torch.ones_like(index.flatten(), dtype=probs.dtype)
    )
    f = counts / index.numel()  # (N,) share of assignments, sums to 1
    p = probs.mean(dim=0)  # (N,) mean probability, sums to 1
    return n_experts * (f * p).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    """ST-MoE's router z-loss: the mean over tokens of ``logsumexp(logits)^2``.

    Penalises large router logits (which overflow in low precision) without
    changing which expert wins. logits: (..., n_experts).
    """
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def expert_capacity(
    n_tokens: int, n_experts: int, k: int, capacity_factor: float
) -> int:
    """Slots per expert: ``ceil(capacity_factor * n_tokens * k / n_experts)``.

    With capacity factor 1, perfectly balanced routing fills every slot exactly.
    """
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be > 0, got {capacity_factor}")
    return math.ceil(capacity_factor * n_tokens * k / n_experts)


def capacity_mask(index: Tensor, n_experts: int, capacity: int) -> Tensor:
    """Which assignments fit, (tokens, k) bool, when each expert has ``capacity``
    slots.

    index: (tokens, k), best expert first. Slots are filled first with every token's
    first choice, in token order, then with second choices, and so on (GShard's
    priority); an assignment that finds its expert full is dropped. With k = 1 this
    is the Switch Transformer rule: the first ``capacity`` tokens of an expert stay.
    """
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    one_hot = F.one_hot(index.t().reshape(-1), n_experts)  # (k * tokens, N), by rank
    position = one_hot.cumsum(dim=0) * one_hot  # 1-based place in its expert's queue
    fits = (position.sum(dim=-1) <= capacity).reshape(index.shape[1], -1).t()
    return fits  # (tokens, k)


@dataclass
class Routing:
    """What the router decided for one batch: everything is (tokens, ...)."""

    logits: Tensor  # (tokens, n_experts)
    probs: Tensor  # (tokens, n_experts)
    index: Tensor  # (tokens, k) the chosen experts, best first
    gates: Tensor  # (tokens, k) their weights
    kept: Tensor  # (tokens, k) bool: False where the expert was full (dropped)

    def counts(self) -> Tensor:
        """Assignments each expert received (kept or not), (n_experts,)."""
        n = self.probs.shape[-1]
        return torch.bincount(self.index.flatten(), minlength=n)


@dataclass
class MoEConfig:
    """How ``moe_gpt`` turns a GPT's feed-forward networks into MoE layers.

    ``d_expert`` is each expert's hidden width (default: the model's ``d_ff``);
    ``capacity_factor`` None means no capacity limit; ``balance_coef`` and
    ``z_coef`` weight the auxiliary losses of :func:`moe_aux_loss`.
    """

    n_experts: int = 4
    top_k: int = 1
    d_expert: int | None = None
    renormalize: bool = False
    capacity_factor: float | None = None
    noisy: bool = False
    balance_coef: float = 0.01
    z_coef: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.n_experts, int) or self.n_experts < 1:
            raise ValueError(
                f"n_experts must be a positive int, got {self.n_experts!r}"
            )
        if not isinstance(self.top_k, int) or not 1 <= self.top_k <= self.n_experts:
            raise ValueError(
                f"top_k must be in [1, n_experts={self.n_experts}], got {self.top_k!r}"
            )
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0, got {self.capacity_factor}")


class MoEFeedForward(nn.Module):
    """A sparse mixture-of-experts feed-forward layer: x (..., d_model) -> same.

    A router ``nn.Linear(d_model, n_experts, bias=False)`` scores the experts; each
    token is sent to its ``top_k`` experts (:func:`top_k_gates`) and the layer
    returns ``sum_j gate_j * expert_j(x)`` over the kept assignments. ``expert`` is
    "gelu" (the course ``FeedForward``, with ``bias`` and ``activation``: "gelu_tanh",
    "gelu" or "relu") or "swiglu" (Mixtral's, no biases). With
    ``capacity_factor`` set, each sequence (each row of a 3-D input; the whole input
    if 2-D) gives every expert ``expert_capacity(...)`` slots and a token that
    finds its expert full gets 0 from it. ``noisy`` adds Shazeer et al.'s learned
    Gaussian noise ``randn * softplus(x W_noise)`` to the router logits in training.
    After each call ``self.routing`` holds the :class:`Routing`.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        top_k: int = 2,
        *,
        expert: str = "gelu",
        bias: bool = True,
        activation: str = "gelu_tanh",
        renormalize: bool = True,
        capacity_factor: float | None = None,
        noisy: bool = False,
    ) -> None:
        super().__init__()
        if expert not in EXPERTS:
            raise ValueError(f"expert must be one of {EXPERTS}, got {expert!r}")
        if not 1 <= top_k <= n_experts:
            raise ValueError(
                f"top_k must be in [1, n_experts={n_experts}], got {top_k}"
            )
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0, got {capacity_factor}")
        self.d_model, self.n_experts, self.top_k = d_model, n_experts, top_k
        self.renormalize, self.capacity_factor = renormalize, capacity_factor
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.noise = nn.Linear(d_model, n_experts, bias=False) if noisy else None
        if expert == "gelu":
            make = lambda: FeedForward(d_model, d_ff, 0.0, bias, activation)  # noqa: E731
        else:
            make = lambda: SwiGLU(d_model, d_ff)  # noqa: E731
        self.experts = nn.ModuleList(make() for _ in range(n_experts))
        self.routing: Routing | None = None

    def route(self, x: Tensor, groups: int = 1) -> Routing:
        """Route the tokens x (tokens, d_model), split into ``groups`` equal
        sequences for the capacity limit."""
        logits = self.router(x)  # (tokens, n_experts)
        if self.noise is not None and self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(x))
        probs = logits.float().softmax(dim=-1)
        gates, index = top_k_gates(probs, self.top_k, self.renormalize)
        kept = torch.ones_like(index, dtype=torch.bool)
        if self.capacity_factor is not None:
            per_group = x.shape[0] // groups
            cap = expert_capacity(
                per_group, self.n_experts, self.top_k, self.capacity_factor
            )
            kept = torch.cat(
                [
                    capacity_mask(chunk, self.n_experts, cap)
                    for chunk in index.split(per_group)
                ]
            )
        return Routing(logits, probs, index, gates, kept)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"MoEFeedForward expects last dim {self.d_model}, got {tuple(x.shape)}"
            )
        groups = x.shape[0] if x.ndim == 3 else 1
        flat = x.reshape(-1, self.d_model)  # (tokens, d_model)
        routing = self.route(flat, groups)
        self.routing = routing
        out = torch.zeros_like(flat)
        chosen = routing.index.masked_fill(~routing.kept, -1)  # -1: dropped
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == e)  # the tokens expert e takes
            if token.numel() == 0:
                continue
            y = expert(flat[token]) * routing.gates[token, slot, None].to(flat.dtype)
            out = out.index_add(0, token, y)  # (tokens, d_model)
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        return (
            f"n_experts={self.n_experts}, top_k={self.top_k}, "
            f"renormalize={self.renormalize}, capacity_factor={self.capacity_factor}"
        )


def moe_gpt(config: GPTConfig, moe: MoEConfig) -> GPT:
    """The course GPT with every block's feed-forward network an MoE layer.

    GELU experts of width ``moe.d_expert`` (default ``config.d_ff``), GPT-2's
    initialisation (each expert's output projection scaled like ``fc2``).
    Train with ``lm_loss + moe_aux_loss(model, moe)``.
    """
    model = GPT(config)
    d_expert = moe.d_expert or config.d_ff
    n_residual = 2 * config.n_layers
    for block in model.blocks:
        layer = MoEFeedForward(
            config.d_model,
            d_expert,
            moe.n_experts,
            moe.top_k,
            bias=config.bias,
            renormalize=moe.renormalize,
            capacity_factor=moe.capacity_factor,
            noisy=moe.noisy,
        )
        with torch.no_grad():
            init_normal_(layer, 0.02)
            for expert in layer.experts:
                expert.fc2.weight.normal_(0.0, 0.02 / math.sqrt(n_residual))
            if layer.noise is not None:
                layer.noise.weight.zero_()  # start with unit-scale noise (softplus 0)
        block.ff = layer
    model.moe_config = moe
    return model


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """The MoE layers of a model, in order."""
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


def moe_aux_loss(model: nn.Module, moe: MoEConfig) -> Tensor:
    """``balance_coef * sum(balance_loss) + z_coef * sum(router_z_loss)`` over the
    model's MoE layers, from their last forward pass."""
    total = torch.zeros(())
    for layer in moe_layers(model):
        r = layer.routing
        if r is None:
            raise RuntimeError("run a forward pass before moe_aux_loss")
        total = total.to(r.probs.device)
        if moe.balance_coef:
            total = total + moe.balance_coef * balance_loss(r.probs, r.index)
        if moe.z_coef:
            total = total + moe.z_coef * router_z_loss(r.logits)
    return total


def moe_parameter_counts(config: GPTConfig, moe: MoEConfig) -> tuple[int, int]:
    """(total, active per token) parameters of ``moe_gpt(config, moe)``.

    Active counts the router and ``top_k`` experts per layer, plus everything that
    is not an FFN; the tied embedding matrix is counted once in both.
    """
    d, f = config.d_model, moe.d_expert or config.d_ff
    b = int(config.bias)
    dense = GPTConfig(**{**config.__dict__, "d_ff": f})
    expert = 2 * d * f + b * (f + d)
    router = d * moe.n_experts * (2 if moe.noisy else 1)
    base = count_parameters(dense) - config.n_layers * expert  # no FFN at all
    total = base + config.n_layers * (router + moe.n_experts * expert)
    active = base + config.n_layers * (router + moe.top_k * expert)
    return total, active


def moe_flops_per_token(
    config: GPTConfig, moe: MoEConfig, training: bool = True
) -> int:
    """Matmul FLOPs per token (as :func:`~llmbook.model.model_flops_per_token`):
    each token runs the router and ``top_k`` experts of width ``d_expert``."""
    f = moe.d_expert or config.d_ff
    dense = GPTConfig(**{**config.__dict__, "d_ff": moe.top_k * f})
    router = 2 * config.n_layers * config.d_model * moe.n_experts
    forward = model_flops_per_token(dense, training=False) + router
    return 3 * forward if training else forward
