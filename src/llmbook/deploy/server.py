"""A small HTTP service for the course GPT, and a client to load-test it
(Chapter 11, section 5).

``create_app(model, tokenizer)`` is a FastAPI app with ``GET /health`` and
``POST /generate``, which streams one JSON line per generated token (NDJSON)
and a last line with the totals. Input is checked before any work: a bad parameter
is a 422, a prompt longer than the server accepts a 413, each with a ``detail``
message that names the problem. :class:`Server` runs the app with uvicorn in a
background thread on a free localhost port and stops it on exit (a ``with`` block),
so nothing outlives the notebook or the test. :func:`generate_over_http` and
:func:`load_test` are the client side, on ``http.client`` only.
"""

import http.client
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from llmbook.decoding import SamplingConfig, stream

__all__ = ["create_app", "Server", "generate_over_http", "load_test"]


def create_app(
    model: nn.Module,
    tokenizer,
    *,
    max_prompt_tokens: int | None = None,
    max_new_tokens: int = 64,
):  # no `from __future__ import annotations` here: FastAPI reads the local class
    """The FastAPI app serving ``model`` (eval mode, never trained here).

    ``max_prompt_tokens`` defaults to half the model's context; a request may ask
    for at most ``max_new_tokens`` tokens. Body of ``POST /generate``::

        {"prompt": str, "max_new_tokens": int = 16, "temperature": float = 0,
         "top_k": int | null, "seed": int | null}
    """
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field

    context = model.config.context_length
    max_prompt = context // 2 if max_prompt_tokens is None else max_prompt_tokens
    if not 1 <= max_prompt < context:
        raise ValueError(
            f"max_prompt_tokens must be in [1, {context}), got {max_prompt}"
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    new_limit = max_new_tokens
    model.eval()

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        prompt: str = Field(min_length=1, max_length=20 * max_prompt)
        max_new_tokens: int = Field(min(16, new_limit), ge=1, le=new_limit)
        temperature: float = Field(0.0, ge=0.0, le=10.0)
        top_k: int | None = Field(None, ge=1)
        seed: int | None = None

    app = FastAPI(title="llmbook course GPT")

    @app.exception_handler(RequestValidationError)
    async def readable_errors(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
            parts.append(f"{where}: {err['msg']}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(parts)})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "context_length": context,
                "max_prompt_tokens": max_prompt, "max_new_tokens": new_limit}  # fmt: skip

    @app.post("/generate")
    def generate(req: GenerateRequest):
        ids = tokenizer.encode(req.prompt)
        if len(ids) > max_prompt:
            raise HTTPException(
                status_code=413,
                detail=f"the prompt is {len(ids)} tokens; this server accepts at "
                f"most {max_prompt}",
            )
        if req.top_k is not None and req.top_k > model.config.vocab_size:
            raise HTTPException(
                status_code=422,
                detail=f"top_k: must be <= the vocabulary size "
                f"{model.config.vocab_size}, got {req.top_k}",
            )
        config = SamplingConfig(req.temperature, req.top_k)
        gen = None if req.seed is None else torch.Generator().manual_seed(req.seed)
        device = next(model.parameters()).device

        def lines() -> Iterator[bytes]:
            start = time.perf_counter()
            idx = torch.tensor([ids], device=device)
            new: list[int] = []
            sent = 0
            for token in stream(model, idx, req.max_new_tokens, config, generator=gen):
                new.append(int(token))
                text = tokenizer.decode(new)
                piece = "" if text.endswith("\ufffd") else text[sent:]
                sent += len(piece)
                yield (json.dumps({"token": new[-1], "text": piece}) + "\n").encode()
            seconds = time.perf_counter() - start
            done = {"done": True, "n_tokens": len(new), "seconds": seconds}
            yield (json.dumps(done) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app


class Server:
    """Run an ASGI ``app`` with uvicorn in a daemon thread on ``127.0.0.1`` and a
    free port; ``with Server(app) as s:`` starts it (waits until it accepts
    connections) and stops it on exit. ``s.url`` is its address."""

    def __init__(self, app, host: str = "127.0.0.1", timeout: float = 30.0):
        self.app, self.host, self.timeout = app, host, timeout
        self.port: int | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> "Server":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))  # port 0: the OS picks a free one
        self.port = sock.getsockname()[1]
        # log_config=None: leave the process's logging alone. uvicorn's default
        # config installs handlers bound to the sys.stderr of that moment (in a test,
        # a capture stream that is closed later, which breaks every later test).
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, log_config=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.timeout)
            if self._thread.is_alive():
                raise RuntimeError("the server thread did not stop")
        self._server = self._thread = None
        self.port = None

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def generate_over_http(url: str, payload: dict, timeout: float = 60.0) -> dict:
    """POST ``payload`` to ``url + "/generate"`` and read the stream. Returns the
    status, and for a 200 the tokens, the text, the time to the first token and
    the total time (s, measured by the client); for an error, the ``detail``."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    start = time.perf_counter()
    try:
        body = json.dumps(payload)
        conn.request("POST", "/generate", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            detail = json.loads(resp.read() or b"{}").get("detail")
            return {"status": resp.status, "detail": detail}
        tokens, pieces, first = [], [], None
        for line in resp:  # one JSON object per line, as the server flushes them
            item = json.loads(line)
            if item.get("done"):
                break
            if first is None:
                first = time.perf_counter() - start
            tokens.append(item["token"])
            pieces.append(item["text"])
        total = time.perf_counter() - start
    finally:
        conn.close()
    return {"status": 200, "tokens": tokens, "text": "".join(pieces),
            "first_token_s": first, "seconds": total}  # fmt: skip


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def load_test(
    url: str, payloads: list[dict], concurrency: int, timeout: float = 120.0
) -> dict[str, float]:
    """Send every payload, ``concurrency`` at a time (threads, one connection
    each), and summarise: requests, failures, p50/p95 latency and time to first
    token (s, nearest rank), and generated tokens per second of wall time."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not payloads:
        raise ValueError("need at least one payload")
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(
            pool.map(lambda p: generate_over_http(url, p, timeout), payloads)
        )
    wall = time.perf_counter() - start
    ok = [r for r in results if r["status"] == 200]
    if not ok:
        raise RuntimeError(f"every request failed, e.g. {results[0]}")
    latencies = [r["seconds"] for r in ok]
    firsts = [r["first_token_s"] for r in ok]
    n_tokens = sum(len(r["tokens"]) for r in ok)
    return {"requests": len(results), "failed": len(results) - len(ok),
            "p50_s": _percentile(latencies, 50), "p95_s": _percentile(latencies, 95),
            "p50_first_token_s": _percentile(firsts, 50),
            "tokens_per_s": n_tokens / wall}  # fmt: skip
