"""Weight quantization from scratch (Chapter 11, section 2; Lab 9).

Symmetric (absmax) and asymmetric (zero-point) int8, per tensor or per output
channel; group-wise int4 with two values packed in a byte; and
:class:`QuantizedLinear`, an ``nn.Linear`` whose weights are stored as integers. Its
``"w8a8"`` path multiplies int8 activations by int8 weights with int32 accumulation
and scales once at the end; ``tests/unit/deploy/test_quantize.py`` checks it equals the
dequantize-then-matmul reference, and compares the error with PyTorch's own
``torch.ao`` dynamic quantization.

Conventions: ``q = round(x / scale)`` (symmetric) or ``q = round(x / scale) + zero``
(zero-point), clamped to the integer range; ``x_hat = scale * (q - zero)``. A scale
is never zero: an all-zero tensor (or channel, or group) gets scale 1.
"""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn

__all__ = [
    "absmax_quantize",
    "zeropoint_quantize",
    "dequantize",
    "quantize_groups",
    "dequantize_groups",
    "pack_int4",
    "unpack_int4",
    "int8_matmul",
    "QuantizedLinear",
    "quantize_model",
    "serialized_bytes",
]


def _check_float(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_bits(bits: int) -> None:
    if bits not in (2, 3, 4, 8):
        raise ValueError(f"bits must be 2, 3, 4 or 8, got {bits}")


def absmax_quantize(
    x: Tensor, bits: int = 8, dim: int | None = None
) -> tuple[Tensor, Tensor]:
    """Symmetric quantization: ``scale = max|x| / (2^(bits-1) - 1)``.

    ``dim=None``: one scale for the tensor; ``dim=d``: one scale per index along
    ``d`` (per output channel of a (out, in) weight: ``dim=0``). Returns int8 values
    in ``[-qmax, qmax]`` (same shape as x) and the float scale, shaped to broadcast
    against x.
    """
    _check_float("x", x)
    _check_bits(bits)
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = x.abs().amax()
    else:
        if not -x.dim() <= dim < x.dim():
            raise ValueError(f"dim={dim} is out of range for a {x.dim()}-d tensor")
        dims = [d for d in range(x.dim()) if d != dim % x.dim()]
        amax = x.abs().amax(dim=dims, keepdim=True) if dims else x.abs()
    scale = (amax / qmax).float()
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # all-zero input
    q = torch.clamp(torch.round(x.float() / scale), -qmax, qmax).to(torch.int8)
    return q, scale


def zeropoint_quantize(x: Tensor, bits: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric (affine) quantization of the whole tensor to ``[0, 2^bits - 1]``:
    ``scale = (max - min) / (2^bits - 1)``, ``zero = round(-min / scale)``, so both
    ends of the range are used even when x is not centred on 0. Returns uint8
    values, the scale and the zero point (int32 scalars' tensors)."""
    _check_float("x", x)
    _check_bits(bits)
    qmax = 2**bits - 1
    lo = torch.clamp(x.min().float(), max=0.0)  # the range must contain 0 ...
    hi = torch.clamp(x.max().float(), min=0.0)  # ... so that 0 is exact
    scale = (hi - lo) / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.round(-lo / scale).to(torch.int32)
    q = torch.clamp(torch.round(x.float() / scale) + zero, 0, qmax).to(torch.uint8)
    return q, scale, zero


def dequantize(q: Tensor, scale: Tensor, zero: Tensor | None = None) -> Tensor:
    """``scale * (q - zero)`` as float32 (``zero=None``: symmetric)."""
    q = q.to(torch.int32)
    if zero is not None:
        q = q - zero
    return q.float() * scale


def quantize_groups(
    w: Tensor, bits: int = 4, group_size: int = 32
) -> tuple[Tensor, Tensor]:
    """Group-wise symmetric quantization of a (out, in) weight: every run of
    ``group_size`` input weights of a row gets its own scale (so one outlier spoils
    only its group). Returns int8 values (out, in) in ``[-qmax, qmax]`` and scales
    (out, in // group_size, 1)."""
    _check_float("w", w)
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-d (out, in) weight, got {tuple(w.shape)}")
    if group_size < 1 or w.shape[1] % group_size:
        raise ValueError(
            f"group_size must divide the input dim: {w.shape[1]} % {group_size} != 0"
        )
    out_dim, in_dim = w.shape
    groups = w.reshape(out_dim, in_dim // group_size, group_size)
    q, scale = absmax_quantize(groups.reshape(-1, group_size), bits, dim=0)
    return q.reshape(out_dim, in_dim), scale.reshape(out_dim, -1, 1)


def dequantize_groups(q: Tensor, scale: Tensor) -> Tensor:
    """Inverse of :func:`quantize_groups`: (out, in) float32."""
    out_dim, in_dim = q.shape
    groups = q.reshape(out_dim, scale.shape[1], -1).float() * scale
    return groups.reshape(out_dim, in_dim)


def pack_int4(q: Tensor) -> Tensor:
    """Two signed 4-bit values in [-8, 7] per uint8 byte (low nibble first); the
    last dim must be even. The packed tensor is what int4 costs on disk."""
    if q.dtype != torch.int8:
        raise TypeError(f"q must be int8, got {q.dtype}")
    if q.shape[-1] % 2:
        raise ValueError(f"the last dim must be even, got {q.shape[-1]}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("int4 values must lie in [-8, 7]")
    u = (q.to(torch.int16) & 0xF).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4`: int8 values, last dim doubled."""
    lo = (packed & 0xF).to(torch.int16)
    hi = (packed >> 4).to(torch.int16)
    both = torch.stack([lo, hi], dim=-1).flatten(-2)
    return torch.where(both > 7, both - 16, both).to(torch.int8)


def int8_matmul(x: Tensor, wq: Tensor, w_scale: Tensor) -> Tensor:
    """``x @ W.T`` with W given as int8 ``wq`` (out, in) and per-channel ``w_scale``
    (out, 1): x (..., in) is quantized per row (absmax, int8), the product of the
    integers is accumulated in int32 (exact), and the two scales are applied once::

        y[i, o] = sx[i] * sw[o] * sum_k xq[i, k] * wq[o, k]

    Returns float32 (..., out)."""
    _check_float("x", x)
    if wq.dtype != torch.int8:
        raise TypeError(f"wq must be int8, got {wq.dtype}")
    if x.shape[-1] != wq.shape[1]:
        raise ValueError(
            f"x has {x.shape[-1]} features but the weight expects {wq.shape[1]}"
        )
    rows = x.reshape(-1, x.shape[-1])
    xq, sx = absmax_quantize(rows, 8, dim=0)  # one scale per row: (rows, 1)
    acc = xq.to(torch.int32) @ wq.to(torch.int32).T  # (rows, out), exact integers
    y = acc.float() * sx * w_scale.reshape(1, -1)
    return y.reshape(*x.shape[:-1], wq.shape[0])


class QuantizedLinear(nn.Module):
    """A linear layer with integer weights, built from an ``nn.Linear``.

    ``mode``:

    - ``"w8"``: int8 weights, one scale per output channel, float activations
      (weight-only: the weight is dequantized on the fly);
    - ``"w8a8"``: int8 weights and dynamically quantized int8 activations, integer
      matmul (:func:`int8_matmul`);
    - ``"w4"``: int4 weights in groups of ``group_size`` inputs, stored packed.

    The bias stays float32. x: (..., in_features) -> (..., out_features).
    """

    MODES = ("w8", "w8a8", "w4")

    def __init__(self, linear: nn.Linear, mode: str = "w8", group_size: int = 32):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode, self.group_size = mode, group_size
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        if mode == "w4":
            q, scale = quantize_groups(w, 4, group_size)
            self.register_buffer("qweight", pack_int4(q))
        else:
            q, scale = absmax_quantize(w, 8, dim=0)  # scale: (out, 1)
            self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def weight_dequantized(self) -> Tensor:
        """The float32 (out, in) weight the integers stand for."""
        if self.mode == "w4":
            return dequantize_groups(unpack_int4(self.qweight), self.scale)
        return dequantize(self.qweight, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "w8a8":
            y = int8_matmul(x.float(), self.qweight, self.scale)
        elif self.mode == "w8":  # integer weights times float x, then the scale
            y = (x.float() @ self.qweight.float().T) * self.scale.reshape(-1)
        else:
            y = x.float() @ self.weight_dequantized().T
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, mode={self.mode!r}"


def quantize_model(model: nn.Module, mode: str = "w8", group_size: int = 32):
    """Replace every ``nn.Linear`` of ``model`` (in place) by a
    :class:`QuantizedLinear`; returns the model. A tied LM head becomes an int copy
    of the embedding matrix (the embedding itself stays float, as in ``torch.ao``)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            setattr(model, name, QuantizedLinear(child, mode, group_size))
        else:
            quantize_model(child, mode, group_size)
    return model


def serialized_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())``: what the model costs on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
