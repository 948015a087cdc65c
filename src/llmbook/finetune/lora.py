"""LoRA, low-rank adaptation (Hu et al., 2021), built from scratch (Chapter 7).

A frozen linear layer ``y = x W^T + b`` (W: (out, in)) learns an update of rank r::

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T      A: (r, in), B: (out, r)

Only A and B train: ``r * (in + out)`` numbers instead of ``in * out``. B starts at
zero, so the adapted model starts out computing exactly what the frozen one does; A
starts like ``nn.Linear``'s own weight (Kaiming-uniform with ``a = sqrt(5)``), as in
``peft``'s default ``init_lora_weights=True``. After training, :meth:`LoRALinear.merge`
folds the update into W (``W += (alpha / r) B A``) so inference costs nothing extra;
:meth:`LoRALinear.unmerge` takes it out again.

``tests/unit/finetune/test_finetune.py`` checks this module against ``peft.get_peft_model`` with a
``LoraConfig`` on the course GPT: same outputs, same number of trainable parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = [
    "LoRALinear",
    "apply_lora",
    "lora_layers",
    "lora_state_dict",
    "count_trainable",
    "merge_lora",
    "merge_and_unwrap",
    "unmerge_lora",
]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (see the module doc).

    ``base`` is kept (and frozen) as ``self.base``; ``lora_A`` (r, in_features) and
    ``lora_B`` (out_features, r) are the new parameters; ``scaling = alpha / r``.
    forward: x (..., in_features) -> (..., out_features).
    """

    def __init__(
        self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"the rank r must be a positive integer, got {r!r}")
        if r > min(base.in_features, base.out_features):
            raise ValueError(
                f"rank r={r} exceeds min(in_features, out_features) = "
                f"{min(base.in_features, base.out_features)}: the update is not low-rank"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(
            torch.empty(r, base.in_features, dtype=w.dtype, device=w.device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, r, dtype=w.dtype, device=w.device)
        )
        # nn.Linear's default init: uniform in +-1/sqrt(in_features)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> Tensor:
        """The update ``(alpha / r) B A`` that merging adds to W: (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected input (..., {self.in_features}), got {tuple(x.shape)}"
            )
        out = self.base(x)  # (..., out_features)
        if self.merged:  # the update is already inside base.weight
            return out
        low = self.dropout(x) @ self.lora_A.T  # (..., r)
        return out + self.scaling * (low @ self.lora_B.T)  # (..., out_features)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: ``W <- W + (alpha / r) B A``.

        With dropout > 0 the merged layer equals the unmerged one in eval mode.
        """
        if self.merged:
            raise RuntimeError("this LoRALinear is already merged; unmerge() first")
        self.base.weight += self.delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (float rounding aside)."""
        if not self.merged:
            raise RuntimeError("this LoRALinear is not merged; nothing to unmerge")
        self.base.weight -= self.delta_weight()
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, targets: Iterable[str]) -> bool:
    """``peft``'s rule: a target matches the full name or its last dotted parts."""
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(
    model: nn.Module,
    target_names: Iterable[str] = ("q_proj", "v_proj"),
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
) -> nn.Module:
    """Freeze ``model`` and wrap every ``nn.Linear`` named in ``target_names`` in a
    :class:`LoRALinear`, in place; returns ``model``.

    A target matches a module whose dotted name equals it or ends with ``"." +
    target`` (``"q_proj"`` matches ``blocks.0.attn.q_proj``; ``"0.attn.q_proj"``
    only the first block's). Afterwards only the ``lora_A``/``lora_B`` parameters
    require gradients.
    """
    targets = (target_names,) if isinstance(target_names, str) else tuple(target_names)
    if not targets:
        raise ValueError("target_names is empty: name at least one nn.Linear")
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _matches(name, targets)
    ]
    if not chosen:
        linears = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.named_modules()
                if type(m) is nn.Linear
            }
        )
        raise ValueError(
            f"no nn.Linear in the model matches target_names={list(targets)}; "
            f"its linear layers are named {linears}"
        )
    for name in chosen:
        _replace(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout))
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule called `name` (dotted) is."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    """Every :class:`LoRALinear` inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the LoRA parameters (``...lora_A`` / ``...lora_B``), detached: the small
    file to save after fine-tuning; load it with ``model.load_state_dict(sd,
    strict=False)`` into a model that went through the same :func:`apply_lora`."""
    return {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if name.endswith((".lora_A", ".lora_B"))
    }


def count_trainable(model: nn.Module) -> int:
    """Number of parameters that require gradients (each shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer of ``model`` into its base weight (in place)."""
    for layer in lora_layers(model):
        layer.merge()
    return model


def merge_and_unwrap(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer into its base weight and put the base ``nn.Linear``
    back in its place (in place; what peft's ``merge_and_unload`` does): the model
    then has its original modules and state-dict keys, ready to save."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            if not module.merged:
                module.merge()
            _replace(model, name, module.base)
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_lora` (in place)."""
    for layer in lora_layers(model):
        layer.unmerge()
    return model
