"""The untrusted half: runs one notebook and its tests' probes, exports data only.

``python -m llmbook.grading.harness`` reads a job (JSON) on stdin, then, in this
process, executes the notebook's code cells one by one (no Jupyter kernel: IPython
``%magic`` and ``!shell`` lines are dropped, ``grader.check`` does nothing) and, at each
question's ``grader.check("qN")`` cell (or at the end), runs that question's probes:
each test as the lab build planned it for the sandbox (see `llmbook.grading.slicing.
plan_test`): the statements that call the student's code, with every assert replaced
by a recorder that evaluates the leaves depending on the student's objects. The
test's expected values, conditions and messages are not in the job.

What the probes observed goes out as frames on a pipe (``job["fd"]``): a JSON header
line ``{"name": ..., "size": n}`` and ``n`` bytes, one ``<question>.json`` and
``.safetensors`` per question as soon as it is done (a crash later keeps them), and
``progress.json`` frames saying which cell or test is running. The grader reads at most
a fixed number of bytes from the pipe and nothing else from this process.

This runs inside the sandbox, with the student's code, so nothing here is trusted:
the student's code can replace any of it, and gains nothing by doing so, since the
grader takes only the student's own values from here and checks them against values
the sandbox never saw.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import resource
import sys
import types
from pathlib import Path
from typing import Any

from llmbook.grading import codec, probes

__all__ = ["Harness", "main", "strip_ipython"]

MESSAGE_LIMIT = 500
MAGIC = re.compile(r"^(\s*)[%!].*$")


class Channel:
    """Frames to the grader: a JSON header line, then the bytes."""

    def __init__(self, fd: int | None, folder: Path | None = None) -> None:
        self.fd, self.folder = fd, folder

    def send(self, name: str, data: bytes) -> None:
        if self.fd is None:  # classify mode, on the trusted side: plain files
            assert self.folder is not None
            tmp = self.folder / (name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.folder / name)
            return
        header = json.dumps({"name": name, "size": len(data)}).encode() + b"\n"
        view = memoryview(header + data)
        while view:
            view = view[os.write(self.fd, view) :]

    def json(self, name: str, data: Any) -> None:
        self.send(name, codec.dumps(data).encode("utf-8"))


def short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def describe(exc: BaseException) -> str:
    try:
        return short(f"{type(exc).__name__}: {exc}")
    except BaseException:  # a student's exception whose str() fails
        return "an exception that cannot be shown"


def strip_ipython(source: str) -> str:
    """Drop IPython-only syntax: ``%%cell`` magics, ``%line`` magics, ``!shell``."""
    if source.lstrip().startswith("%%"):
        return ""
    return "\n".join(
        MAGIC.sub(lambda m: f"{m.group(1)}pass", line) for line in source.splitlines()
    )


class _Quiet:
    """Stands for otter's Notebook and IPython's shell: every method does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def fake_otter() -> types.ModuleType:
    module = types.ModuleType("otter")
    module.Notebook = _Quiet  # type: ignore[attr-defined]
    return module


class Harness:
    """Executes the cells and the probes; writes the exports."""

    def __init__(self, job: dict[str, Any], channel: Channel) -> None:
        self.job = job
        self.channel = channel
        self.classify = job["mode"] == "classify"
        self.namespace: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": builtins,
            "display": lambda *args, **kwargs: None,
            "get_ipython": _Quiet,
        }
        self.cell_errors: list[dict[str, Any]] = []
        self.progress: dict[str, Any] = {}

    def note(self, **progress: Any) -> None:
        self.progress = progress
        self.channel.json("progress.json", progress)

    def run(self) -> None:
        cells = self.job["cells"]
        by_position: dict[int, list[str]] = {}
        pending = list(self.job["questions"])
        for question, position in self.job["anchors"].items():
            if position is not None:
                by_position.setdefault(position, []).append(question)
        for position, cell in enumerate(cells):
            if not cell.get("skip"):
                self.run_cell(cell)
            for question in by_position.get(position, []):
                params = {
                    p for t in self.job["questions"][question] for p in t["params"]
                }
                if all(p in self.namespace for p in params):  # else: at the end
                    self.run_question(question)
                    pending.remove(question)
        for question in pending:
            self.run_question(question)
        self.note(stage="done")
        self.channel.json("cells.json", self.cell_errors)
        usage = [
            resource.getrusage(w)
            for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        ]
        cpu = sum(u.ru_utime + u.ru_stime for u in usage)  # for throughput figures only
        self.channel.json("done.json", {"done": True, "cpu_s": round(cpu, 3)})

    def run_cell(self, cell: dict[str, Any]) -> None:
        self.note(stage="cell", cell=cell["index"])
        try:
            code = compile(
                strip_ipython(cell["source"]), f"<cell {cell['index']}>", "exec"
            )
            exec(code, self.namespace)
        except BaseException as exc:  # any error of the student's cell
            self.cell_errors.append({"cell": cell["index"], "error": describe(exc)})

    def run_question(self, question: str) -> None:
        store = codec.TensorStore()
        results = [
            self.run_test(question, test, store)
            for test in self.job["questions"][question]
        ]
        self.note(stage="export", question=question)
        self.channel.send(f"{question}.safetensors", store.to_bytes())
        self.channel.json(f"{question}.json", {"question": question, "tests": results})
        self.channel.json("cells.json", self.cell_errors)

    def run_test(
        self, question: str, test: dict[str, Any], store: codec.TensorStore
    ) -> dict:
        self.note(stage="test", question=question, test=test["name"])
        record: dict[str, Any] = {"name": test["name"], "asserts": [], "error": None}
        if self.classify:  # the reference run: the whole test, every leaf found
            source, sites = probes.instrument(test["source"])
        else:  # a student's run: the planned probes, their leaves by source
            source, sites = test["source"], []
            wanted = {
                int(a): {p: ast.parse(src, mode="eval").body for p, src in by.items()}
                for a, by in test.get("leaves", {}).items()
            }

        def recorder(index: int, env: dict[str, Any]) -> None:
            scope = {**test_globals, **env}
            entry: dict[str, Any] = {"a": index}
            if self.classify:
                site = sites[index]
                if site.fail:
                    entry["leaves"] = {}
                else:
                    found = probes.classify(site.cond, scope)
                    entry["leaves"] = self.encode_leaves(found.leaves, store)
                    entry["refs"] = found.refs
                entry["mutable"] = sorted(
                    k for k, v in env.items() if probes.is_stateful(v)
                )
            else:
                values = probes.evaluate_nodes(wanted.get(index, {}), scope)
                entry["leaves"] = self.encode_leaves(values, store)
            record["asserts"].append(entry)

        test_globals: dict[str, Any] = {
            "__builtins__": builtins,
            probes.RECORD: recorder,
        }
        try:
            exec(compile(source, f"<{test['name']}>", "exec"), test_globals)
            function = test_globals[test["name"]]
            missing = [p for p in test["params"] if p not in self.namespace]
            if missing:
                raise NameError(f"name {missing[0]!r} is not defined")
            function(*[self.namespace[p] for p in test["params"]])
        except BaseException as exc:  # the student's code raised
            if self.classify:
                raise
            record["error"] = describe(exc)
            record["error_type"] = type(exc).__name__[:100]
        record["completed"] = True
        return record

    @staticmethod
    def encode_leaves(values: dict[str, Any], store: codec.TensorStore) -> dict:
        encoded: dict[str, Any] = {}
        seen: dict[int, str] = {}
        for path, value in values.items():
            if isinstance(value, BaseException):
                encoded[path] = {"opaque": f"error: {describe(value)}"}
            elif id(value) in seen and not isinstance(value, (bool, int, float, str)):
                encoded[path] = {"same": seen[id(value)]}
            else:
                seen[id(value)] = path
                encoded[path] = codec.encode(value, store)
        return encoded


def main() -> int:
    job = json.loads(sys.stdin.read())
    fd = job.get("fd")
    channel = Channel(fd if isinstance(fd, int) else None, Path(job.get("out", ".")))
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):  # the student's output goes nowhere; it cannot flood us
        os.dup2(devnull, std)
    sys.stdin = open(os.devnull, encoding="utf-8")  # replaces the real stdin
    sys.modules["otter"] = fake_otter()
    sys.argv = ["notebook"]
    harness = Harness(job, channel)
    try:
        harness.run()
    except BaseException as exc:  # report the harness's own failure
        try:
            channel.json(
                "harness_error.json",
                {"error": describe(exc), "progress": harness.progress},
            )
        except OSError:
            pass
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
