"""Deploying a model (Chapter 11, Lab 9).

Modules:

- ``memory``: bytes for weights, gradients, optimizer state, activations and the
  KV cache, from a model's shape (``ModelShape``, ``memory_table``);
- ``quantize``: absmax and zero-point int8, group-wise int4, an integer matmul and
  ``QuantizedLinear`` / ``quantize_model``;
- ``export``: ``TracedGPT`` (one graph, for ``torch.compile``), ``export_onnx`` and
  ``onnx_session`` (onnxruntime);
- ``batching``: left-padded batched generation (``batched_greedy``) and a simulator
  of static vs continuous batching (``simulate``);
- ``server``: a FastAPI service that streams tokens (``create_app``), run in a
  background thread (``Server``), and its HTTP client and load test.

``tests/unit/deploy/test_quantize.py`` and ``tests/unit/deploy/test_serve.py`` check each against PyTorch
(``torch.ao`` dynamic quantization, the unbatched decoder) and real HTTP.
"""

from llmbook.deploy.batching import (
    Request,
    batched_greedy,
    left_pad,
    padded_forward,
    simulate,
)
from llmbook.deploy.export import TracedGPT, export_onnx, onnx_session
from llmbook.deploy.memory import (
    BYTES,
    LLAMA2_7B,
    LLAMA2_70B,
    ModelShape,
    memory_table,
)
from llmbook.deploy.quantize import (
    QuantizedLinear,
    absmax_quantize,
    dequantize,
    dequantize_groups,
    int8_matmul,
    pack_int4,
    quantize_groups,
    quantize_model,
    serialized_bytes,
    unpack_int4,
    zeropoint_quantize,
)
from llmbook.deploy.server import Server, create_app, generate_over_http, load_test

__all__ = [
    "BYTES",
    "LLAMA2_7B",
    "LLAMA2_70B",
    "ModelShape",
    "QuantizedLinear",
    "Request",
    "Server",
    "TracedGPT",
    "absmax_quantize",
    "batched_greedy",
    "create_app",
    "dequantize",
    "dequantize_groups",
    "export_onnx",
    "generate_over_http",
    "int8_matmul",
    "left_pad",
    "load_test",
    "memory_table",
    "onnx_session",
    "pack_int4",
    "padded_forward",
    "quantize_groups",
    "quantize_model",
    "serialized_bytes",
    "simulate",
    "unpack_int4",
    "zeropoint_quantize",
]
