"""Builders that several test modules share (fixtures live in tests/conftest.py).

Usage::

    from helpers import random_gpt

    model = random_gpt(3000, config=SIZES, scale=0.3, n_layers=1)
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from llmbook.model.gpt import GPT, GPTConfig

__all__ = ["random_gpt", "serve_directory"]


@torch.no_grad()
def random_gpt(
    seed: int | None = None,
    *,
    config: GPTConfig | Mapping[str, Any] | None = None,
    scale: float = 0.0,
    generator: torch.Generator | None = None,
    **sizes: Any,
) -> GPT:
    """A freshly initialised course GPT in eval mode, optionally perturbed.

    ``seed``: ``torch.manual_seed(seed)`` first (else torch's global generator is used
    as it stands). ``config``: a ``GPTConfig``, or a mapping of ``GPTConfig`` fields
    that ``sizes`` override (a mapping, so that a derived field such as ``d_ff`` is
    derived again from the overridden sizes). ``scale``: every parameter is moved by
    ``scale`` times standard normal noise, drawn from ``generator`` if given, else from
    torch's global generator, parameter by parameter in ``model.parameters()`` order.
    """
    if isinstance(config, GPTConfig):
        if sizes:
            raise TypeError(
                f"pass sizes with a mapping config, not a GPTConfig: {sizes}"
            )
        gpt_config = config
    else:
        gpt_config = GPTConfig(**{**(config or {}), **sizes})
    if seed is not None:
        torch.manual_seed(seed)
    model = GPT(gpt_config).eval()
    if scale:
        for p in model.parameters():
            if generator is None:
                noise = torch.randn_like(p)
            else:
                noise = torch.randn(p.shape, generator=generator)
            p.add_(scale * noise)
    return model


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (a free port) in a daemon thread;
    yields the base URL, without a trailing slash."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
