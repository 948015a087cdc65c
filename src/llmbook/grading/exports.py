"""The one channel out of the grading sandbox: a pipe of framed files.

The harness inside writes each export as a JSON header line (``name``, ``size``) and
``size`` bytes; :func:`receive`, in a thread of the grader, writes them under a folder
the sandbox never sees, refusing names other than :data:`NAME`, malformed frames and
more than the limit of bytes in all (``runner.EXPORT_LIMIT``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NAME", "Exported", "receive"]


@dataclass
class Exported:
    """What the sandbox sent on its pipe: files written under `folder`."""

    folder: Path
    bytes: int = 0
    problem: str | None = None  # over the limit, or a malformed frame
    peak_mb: float | None = None  # the sandbox's peak memory (cgroup), if known
    oom: bool = False  # the cgroup's memory limit killed a process


NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def receive(fd: int, folder: Path, limit: int, out: Exported, stop) -> None:
    """Read frames from the sandbox into `folder`, at most `limit` bytes in all."""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        buffer = b""
        while True:
            while b"\n" not in buffer:
                chunk = pipe.read(65536)
                if not chunk:
                    if buffer:
                        out.problem = "its exports ended in the middle of a frame"
                    return
                buffer += chunk
                if len(buffer) > 4096 and b"\n" not in buffer:
                    out.problem = "its exports were malformed"
                    return stop()
            line, buffer = buffer.split(b"\n", 1)
            try:
                header = json.loads(line)
                name, size = header["name"], int(header["size"])
            except (ValueError, KeyError, TypeError):
                out.problem = "its exports were malformed"
                return stop()
            if not (isinstance(name, str) and NAME.fullmatch(name)) or size < 0:
                out.problem = "its exports were malformed"
                return stop()
            out.bytes += len(line) + 1 + size
            if out.bytes > limit:
                out.problem = (
                    f"it exported more than {limit // 2**20} MB (the limit per "
                    "submission)"
                )
                return stop()
            part = folder / (name + ".part")
            with open(part, "wb") as f:
                need = size
                while need:
                    if not buffer:
                        buffer = pipe.read(min(65536, need))
                        if not buffer:
                            out.problem = "its exports ended in the middle of a frame"
                            return
                    take, buffer = buffer[:need], buffer[need:]
                    f.write(take)
                    need -= len(take)
            os.replace(part, folder / name)
