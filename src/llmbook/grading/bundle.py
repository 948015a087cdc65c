"""The autograder zip as the grader reads it: tests, points, and reference values.

``make labs`` (tools/build_labs.py) builds one zip per lab with otter assign. It holds
``tests/qN.py`` (public and hidden tests) and, added by
`llmbook.grading.reference.add_reference`, the values
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

from llmbook.grading import codec, probes, slicing

__all__ = ["Bundle", "BundleError", "load_bundle", "natural_key"]

REFERENCE_JSON = "llmbook/reference.json"
REFERENCE_TENSORS = "llmbook/reference.safetensors"
NEEDS_JSON = "llmbook/needs.json"


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
    needs: list[str] | None = None  # modules the master and its tests import

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

    @cached_property
    def plans(self) -> dict[str, slicing.Plan]:
        """Test name -> what the sandbox receives for it (see `slicing.plan_test`).

        Built and verified with the lab (``add_reference``); a zip built before plans
        existed gets every test unsliced.
        """
        plans = {}
        for tests in self.tests.values():
            for t in tests:
                stored = self.reference.get(t.name, {}).get("plan")
                if isinstance(stored, dict):
                    plans[t.name] = slicing.Plan(
                        stored["source"],
                        {int(a): dict(v) for a, v in stored["leaves"].items()},
                        bool(stored["sliced"]),
                    )
                else:
                    plans[t.name] = slicing.plan_test(
                        t, self.leaf_paths(t.name), slice_it=False
                    )
        return plans

    def job_questions(self, classify: bool = False) -> dict[str, list[dict[str, Any]]]:
        """The tests as the harness receives them.

        For grading: each test's planned probes (sliced source, leaves by source).
        For the reference run (`classify`): the test's own source.
        """
        if classify:
            return {
                q: [
                    {"name": t.name, "params": t.params, "source": t.source} for t in ts
                ]
                for q, ts in self.tests.items()
            }
        return {
            q: [
                {
                    "name": t.name,
                    "params": t.params,
                    "source": self.plans[t.name].source,
                    "leaves": {str(a): v for a, v in self.plans[t.name].leaves.items()},
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
            if NEEDS_JSON in names:
                needs = json.loads(zf.read(NEEDS_JSON))
                if isinstance(needs, list) and all(isinstance(m, str) for m in needs):
                    bundle.needs = needs
        elif require_reference:
            raise BundleError(
                f"{path} has no {REFERENCE_JSON}: it was not built by this course's "
                "`make labs` (rebuild it)"
            )
    return bundle
