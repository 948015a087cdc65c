"""Values as data: what crosses the sandbox boundary, in both directions of trust.

The sandbox exports the values that the tests observed (a student's tensors, numbers,
strings, containers of them) as JSON plus one safetensors file; the trusted side
decodes them without ever running code from the sandbox: no pickle, no ``eval``.

JSON shapes: ``null``, booleans, numbers (``NaN``/``Infinity`` allowed) and strings
are themselves; every other value is a one-key object naming its kind::

    {"list": [...]}   {"tuple": [...]}   {"set": [...]}   {"dict": [[k, v], ...]}
    {"counter": [[k, v], ...]}   {"size": [2, 3]}   {"dtype": "float64"}
    {"tensor": "t0", "grad": "t1" | null, "requires_grad": true, "param": false}
    {"opaque": "TypeName"}       (something that is not data: compared as unequal)
    {"same": 0}                  (the same object as top-level value 0 of this record)

Only the standard library is imported here; torch and safetensors are imported when a
tensor is met.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = [
    "Opaque",
    "ParseLimit",
    "TensorStore",
    "decode",
    "encode",
    "loads_limited",
    "same_value",
]

MAX_ITEMS = 200_000  # elements of containers in one value
MAX_NUMEL = 32_000_000  # elements of one tensor
MAX_STR = 100_000  # characters of one string


class Opaque:
    """Stands for a value that was not data (an object, a function, an error)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<not data: {self.kind}>"

    def __bool__(self) -> bool:
        raise TypeError(f"{self.kind} is not data the grader can check")


class TensorStore:
    """Tensors referenced from JSON by key, saved together as one safetensors file."""

    def __init__(self, tensors: dict[str, Any] | None = None) -> None:
        self.tensors: dict[str, Any] = dict(tensors or {})

    def add(self, tensor: Any) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = tensor.detach().cpu().contiguous().clone()
        return key

    def save(self, path: Path) -> None:
        if not self.tensors:
            return
        from safetensors.torch import save_file

        save_file(self.tensors, str(path))

    def to_bytes(self) -> bytes:
        if not self.tensors:
            return b""
        from safetensors.torch import save

        return save(self.tensors)

    @classmethod
    def load(cls, path: Path) -> TensorStore:
        if not path.is_file() or path.stat().st_size == 0:
            return cls()
        from safetensors.torch import load_file

        return cls(load_file(str(path)))


class _Budget:
    def __init__(self) -> None:
        self.items = 0

    def take(self, n: int = 1) -> None:
        self.items += n
        if self.items > MAX_ITEMS:
            raise ValueError("value too large to export")


def _torch() -> Any:
    import sys

    return sys.modules.get("torch")


def encode(value: Any, store: TensorStore) -> Any:
    """`value` as JSON-ready data; anything that is not data becomes ``opaque``."""
    try:
        return _encode(value, store, _Budget(), 0)
    except (ValueError, RecursionError, TypeError) as exc:
        return {"opaque": f"too large or not data ({exc})"[:200]}


def _encode(value: Any, store: TensorStore, budget: _Budget, depth: int) -> Any:
    budget.take()
    if depth > 50:
        raise ValueError("nested too deeply")
    kind = type(value)
    if value is None or kind is bool:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        if len(value) > MAX_STR:
            raise ValueError("string too long")
        return str(value)
    torch = _torch()
    if torch is not None:
        if isinstance(value, torch.Size):
            return {"size": [int(v) for v in value]}
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.Tensor):
            return _encode_tensor(value, store, torch)
    if isinstance(value, Counter):
        return {"counter": _pairs(value, store, budget, depth)}
    if isinstance(value, dict):
        return {"dict": _pairs(value, store, budget, depth)}
    for name, cls in (("tuple", tuple), ("list", list)):
        if isinstance(value, cls):
            budget.take(len(value))
            return {name: [_encode(v, store, budget, depth + 1) for v in value]}
    if isinstance(value, (set, frozenset)):
        budget.take(len(value))
        return {"set": [_encode(v, store, budget, depth + 1) for v in value]}
    return {"opaque": kind.__name__[:100]}


def _pairs(value: dict, store: TensorStore, budget: _Budget, depth: int) -> list:
    budget.take(2 * len(value))
    return [
        [_encode(k, store, budget, depth + 1), _encode(v, store, budget, depth + 1)]
        for k, v in value.items()
    ]


def _encode_tensor(value: Any, store: TensorStore, torch: Any) -> Any:
    if value.layout != torch.strided or value.device.type not in ("cpu", "cuda"):
        return {"opaque": f"tensor with layout {value.layout} on {value.device}"}
    if value.numel() > MAX_NUMEL:
        raise ValueError(f"tensor of {value.numel()} elements")
    grad = value.grad if value.is_leaf else None
    return {
        "tensor": store.add(value),
        "grad": store.add(grad) if isinstance(grad, torch.Tensor) else None,
        "requires_grad": bool(value.requires_grad),
        "param": isinstance(value, torch.nn.Parameter),
    }


def decode(data: Any, store: TensorStore, depth: int = 0) -> Any:
    """Rebuild a value from `encode`'s output (untrusted input: checked, never run)."""
    if depth > 60:
        return Opaque("nested too deeply")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):  # never produced by encode
        return Opaque("malformed value")
    if not isinstance(data, dict) or len(data) == 0:
        return Opaque("malformed value")
    if "tensor" in data:
        return _decode_tensor(data, store)
    (kind, body), *_ = data.items()
    items = body if isinstance(body, list) else []
    if kind == "list":
        return [decode(v, store, depth + 1) for v in items]
    if kind == "tuple":
        return tuple(decode(v, store, depth + 1) for v in items)
    try:
        if kind == "set":
            return {decode(v, store, depth + 1) for v in items}
        if kind in ("dict", "counter"):
            pairs = {
                decode(p[0], store, depth + 1): decode(p[1], store, depth + 1)
                for p in items
                if isinstance(p, list) and len(p) == 2
            }
            return Counter(pairs) if kind == "counter" else pairs
    except TypeError:  # an unhashable key
        return Opaque("malformed value")
    if kind == "size":
        import torch

        return torch.Size(int(v) for v in items if isinstance(v, int))
    if kind == "dtype":
        import torch

        dtype = getattr(torch, str(body), None)
        return dtype if isinstance(dtype, torch.dtype) else Opaque("unknown dtype")
    if kind == "opaque":
        return Opaque(str(body)[:200])
    return Opaque("malformed value")


def _decode_tensor(data: dict, store: TensorStore) -> Any:
    import torch

    tensor = store.tensors.get(data.get("tensor"))
    if tensor is None:
        return Opaque("missing tensor")
    tensor = tensor.clone()
    grad = store.tensors.get(data.get("grad")) if data.get("grad") else None
    if data.get("requires_grad") and (
        tensor.is_floating_point() or tensor.is_complex()
    ):
        tensor.requires_grad_(True)
    if data.get("param"):
        tensor = torch.nn.Parameter(tensor, requires_grad=tensor.requires_grad)
    if grad is not None and tensor.requires_grad and grad.shape == tensor.shape:
        tensor.grad = grad.to(tensor.dtype)
    return tensor


def same_value(a: Any, b: Any, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Whether a student's value equals the reference value, within a tolerance.

    Tensors: same shape and dtype, close values (NaN equal to NaN), close gradients.
    Floats: close. Containers: same kind and size, element by element. Anything else:
    ``==`` on plain data.
    """
    if isinstance(a, Opaque) or isinstance(b, Opaque):
        return False
    torch = _torch()
    if torch is not None and isinstance(b, torch.Tensor):
        if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not _tensors_close(a, b, rtol, atol, torch):
            return False
        ga, gb = getattr(a, "grad", None), getattr(b, "grad", None)
        if gb is None:
            return ga is None
        return ga is not None and _tensors_close(ga, gb, rtol, atol, torch)
    if isinstance(b, bool) or b is None or isinstance(b, str):
        return type(a) is type(b) and a == b
    if isinstance(b, (int, float)):
        if not isinstance(a, (int, float)) or isinstance(a, bool):
            return False
        if isinstance(b, int) and isinstance(a, int):
            return a == b
        if math.isnan(b) or math.isnan(a):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    if isinstance(b, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same_value(x, y, rtol, atol) for x, y in zip(a, b, strict=True))
        )
    if isinstance(b, dict):
        return (
            isinstance(a, dict)
            and set(a) == set(b)
            and all(same_value(a[k], b[k], rtol, atol) for k in b)
        )
    try:
        return bool(a == b)
    except Exception:
        return False


def _tensors_close(a: Any, b: Any, rtol: float, atol: float, torch: Any) -> bool:
    a, b = a.detach(), b.detach()
    if not (a.is_floating_point() or a.is_complex()):
        return bool(torch.equal(a, b))
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


class ParseLimit(ValueError):
    """Data too large or too deep to parse safely; the message says which."""


def loads_limited(text: str | bytes, containers: int) -> Any:
    """`json.loads` within limits, for untrusted JSON.

    At most `containers` objects and arrays (counted before parsing, an upper bound,
    so a file of millions of ``{}`` is refused without building them); a number
    Python refuses to read (an integer of thousands of digits) or nesting deeper than
    the parser follows raises ParseLimit, never RecursionError. Other malformed JSON
    raises ValueError.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if text.count("{") + text.count("[") > containers:
        raise ParseLimit(f"more than {containers:,} JSON objects and arrays")
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ParseLimit("JSON nested too deeply") from exc
    except ValueError as exc:
        if "digits" in str(exc) or "integer string conversion" in str(exc):
            raise ParseLimit("a number with too many digits") from exc
        raise


def dumps(obj: Any) -> str:
    """JSON text for export files."""
    return json.dumps(obj, allow_nan=True, separators=(",", ":"))
