"""The autograder zip as the grader reads it: tests, points, and reference values.

``make labs`` (tools/build_labs.py) builds one zip per lab with otter assign. It holds
``tests/qN.py`` (public and hidden tests) and, added by `add_reference`, the values
that the tests observed when run on the reference solution:

- ``llmbook/reference.json``: per test, each assert's leaves (see
  `llmbook.grading.probes`) with the solution's values, and the names the trusted side
  must resolve (``torch``, ``math``, ...);
- ``llmbook/reference.safetensors``: the tensors those values refer to.

The zip stays on the grader's side: the sandbox never sees it.
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from llmbook.grading import codec, probes

__all__ = ["Bundle", "BundleError", "add_reference", "load_bundle", "natural_key"]

REFERENCE_JSON = "llmbook/reference.json"
REFERENCE_TENSORS = "llmbook/reference.safetensors"


class BundleError(ValueError):
    """The autograder zip is missing, malformed or not built by `make labs`."""


def natural_key(name: str) -> list[int | str]:
    """Sort key that puts q2 before q10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass
class Bundle:
    """Everything the trusted side needs to grade one lab."""

    path: Path
    lab: str
    questions: dict[str, float]  # question -> points possible
    tests: dict[str, list[probes.TestDef]]  # question -> its tests, in order
    reference: dict[str, Any] = field(default_factory=dict)  # test name -> record
    tensors: codec.TensorStore = field(default_factory=codec.TensorStore)

    @cached_property
    def sites(self) -> dict[str, list[probes.AssertSite]]:
        """Test name -> its asserts, numbered as the harness numbers them."""
        return {
            t.name: probes.instrument(t.source)[1]
            for tests in self.tests.values()
            for t in tests
        }

    def leaf_paths(self, test: str) -> dict[int, list[str]]:
        """For each assert of `test`, the leaves the reference run found."""
        paths: dict[int, set[str]] = {}
        for entry in self.reference.get(test, {}).get("asserts", []):
            paths.setdefault(int(entry["a"]), set()).update(entry["leaves"])
        return {a: _outermost(p) for a, p in paths.items()}

    def job_questions(self) -> dict[str, list[dict[str, Any]]]:
        """The tests as the harness receives them (sources, parameters, leaves)."""
        return {
            q: [
                {
                    "name": t.name,
                    "params": t.params,
                    "source": t.source,
                    "leaves": {str(a): p for a, p in self.leaf_paths(t.name).items()},
                }
                for t in tests
            ]
            for q, tests in self.tests.items()
        }


def _outermost(paths: set[str]) -> list[str]:
    kept = []
    for path in sorted(paths, key=len):
        if not any(path == k or path.startswith(k + "/") or not k for k in kept):
            kept.append(path)
    return kept


def _question_points(text: str) -> tuple[str, float]:
    name, points = None, None
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "name":
                    name = node.value.value
                if isinstance(target, ast.Name) and target.id == "points":
                    points = node.value.value
    if not isinstance(name, str) or not isinstance(points, (int, float)):
        raise BundleError("a test file has no `name` or `points`")
    return name, float(points)


def load_bundle(path: str | Path, require_reference: bool = True) -> Bundle:
    """Read the autograder zip `path` (built by `make labs`)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(
            f"autograder zip not found: {path} (run `make labs`; the zips land in "
            "_build/autograder/)"
        )
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path} is not a zip file")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        test_files = sorted(
            (n for n in names if re.fullmatch(r"tests/[^/]+\.py", n)), key=natural_key
        )
        if not test_files:
            raise BundleError(
                f"{path} is not an otter autograder zip: it has no tests/*.py"
            )
        questions, tests = {}, {}
        for name in test_files:
            text = zf.read(name).decode("utf-8")
            question, points = _question_points(text)
            questions[question] = points
            tests[question] = probes.parse_test_file(text, question)
        config = (
            json.loads(zf.read("otter_config.json"))
            if "otter_config.json" in names
            else {}
        )
        lab = config.get("assignment_name") or path.stem
        bundle = Bundle(path=path, lab=lab, questions=questions, tests=tests)
        if REFERENCE_JSON in names:
            bundle.reference = json.loads(zf.read(REFERENCE_JSON))
            if REFERENCE_TENSORS in names:
                with tempfile.TemporaryDirectory(prefix="llmbook-ref-") as tmp:
                    target = Path(tmp, "reference.safetensors")
                    target.write_bytes(zf.read(REFERENCE_TENSORS))
                    bundle.tensors = codec.TensorStore.load(target)
        elif require_reference:
            raise BundleError(
                f"{path} has no {REFERENCE_JSON}: it was not built by this course's "
                "`make labs` (rebuild it)"
            )
    return bundle


def add_reference(zip_path: Path, master: Path, timeout: float = 900.0) -> Bundle:
    """Run the tests on `master`'s solution and store what they observed in the zip.

    Raises RuntimeError, naming the test, if the solution fails a test here (a test
    that cannot be checked from data, or one that is not deterministic).
    """
    from llmbook.grading import notebook, runner

    bundle = load_bundle(zip_path, require_reference=False)
    cells = notebook.master_cells(master)
    exports = runner.run_job(
        bundle, cells, None, mode="classify", unsafe=True, timeout=timeout
    )
    if exports.problem:
        raise RuntimeError(
            f"{master.name}: the reference run failed: {exports.problem}"
        )
    reference: dict[str, Any] = {}
    merged = codec.TensorStore()
    for question in bundle.questions:
        data = exports.questions.get(question)
        if data is None:
            raise RuntimeError(f"{master.name}: no reference values for {question}")
        for key, tensor in exports.stores[question].tensors.items():
            merged.tensors[f"{question}.{key}"] = tensor
        for record in data["tests"]:
            refs: dict[str, str] = {}
            for entry in record["asserts"]:
                refs.update(entry.pop("refs", {}))
            _qualify(record["asserts"], question)  # tensor keys: per question file
            reference[record["name"]] = {"asserts": record["asserts"], "refs": refs}
    bundle.reference, bundle.tensors = reference, merged
    from llmbook.grading import scoring

    for tests in bundle.tests.values():
        for test in tests:
            result = scoring.score_test(bundle, test, reference.get(test.name), merged)
            if not result.passed:
                raise RuntimeError(
                    f"{master.name}: the solution fails {test.name} when checked from "
                    f"data: {result.message}"
                )
    with tempfile.TemporaryDirectory(prefix="llmbook-ref-") as tmp:
        tensors = Path(tmp, "reference.safetensors")
        merged.save(tensors)
        with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(REFERENCE_JSON, json.dumps(reference, allow_nan=True))
            if tensors.is_file():
                zf.write(tensors, REFERENCE_TENSORS)
    return bundle


def _qualify(value: Any, prefix: str) -> None:
    """Prefix every tensor key in an encoded value (in place) with `prefix`."""
    if isinstance(value, list):
        for item in value:
            _qualify(item, prefix)
    elif isinstance(value, dict):
        if "tensor" in value:
            value["tensor"] = f"{prefix}.{value['tensor']}"
            if value.get("grad"):
                value["grad"] = f"{prefix}.{value['grad']}"
            return
        for item in value.values():
            _qualify(item, prefix)
