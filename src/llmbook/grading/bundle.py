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
    def plans(self) -> dict[str, probes.Plan]:
        """Test name -> what the sandbox receives for it (see `probes.plan_test`).

        Built and verified with the lab (``add_reference``); a zip built before plans
        existed gets every test unsliced.
        """
        plans = {}
        for tests in self.tests.values():
            for t in tests:
                stored = self.reference.get(t.name, {}).get("plan")
                if isinstance(stored, dict):
                    plans[t.name] = probes.Plan(
                        stored["source"],
                        {int(a): dict(v) for a, v in stored["leaves"].items()},
                        bool(stored["sliced"]),
                    )
                else:
                    plans[t.name] = probes.plan_test(
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
            mutable: set[str] = set()
            for entry in record["asserts"]:
                refs.update(entry.pop("refs", {}))
                mutable.update(entry.pop("mutable", []))
            _qualify(record["asserts"], question)  # tensor keys: per question file
            reference[record["name"]] = {
                "asserts": record["asserts"],
                "refs": refs,
                "mutable": sorted(mutable),
            }
    bundle.reference, bundle.tensors = reference, merged
    from llmbook.grading import labs, scoring

    for tests in bundle.tests.values():
        for test in tests:
            result = scoring.score_test(bundle, test, reference.get(test.name), merged)
            if not result.passed:
                raise RuntimeError(
                    f"{master.name}: the solution fails {test.name} when checked from "
                    f"data: {result.message}"
                )
    bundle.needs = imported_modules(master, bundle)
    _plan(bundle, master, cells, timeout, labs, scoring)
    with tempfile.TemporaryDirectory(prefix="llmbook-ref-") as tmp:
        tensors = Path(tmp, "reference.safetensors")
        merged.save(tensors)
        with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(REFERENCE_JSON, json.dumps(reference, allow_nan=True))
            zf.writestr(NEEDS_JSON, json.dumps(bundle.needs))
            if tensors.is_file():
                zf.write(tensors, REFERENCE_TENSORS)
    return bundle


def imported_modules(master: Path, bundle: Bundle) -> list[str]:
    """Every module the master's code cells and the lab's tests import (sorted)."""
    import nbformat

    from llmbook.grading.harness import strip_ipython

    sources = [
        strip_ipython(c.source)
        for c in nbformat.read(master, as_version=4).cells
        if c.cell_type == "code"
    ]
    sources += [t.source for tests in bundle.tests.values() for t in tests]
    found: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return sorted(found)


def _plan(bundle: Bundle, master: Path, cells, timeout, labs, scoring) -> None:
    """Slice each test for the sandbox, keeping only slices the solution passes.

    Every test is planned (`probes.plan_test`), then the solution is graded with the
    sliced probes; a test whose slice does not give the solution full marks (a
    dropped statement drew random numbers, say) is sent whole instead.
    """
    from llmbook.grading import runner

    plans = {}
    for tests in bundle.tests.values():
        for t in tests:
            try:
                plans[t.name] = probes.plan_test(
                    t,
                    bundle.leaf_paths(t.name),
                    labs.free_leaves(bundle.lab, t.name),
                    mutable=set(bundle.reference[t.name].get("mutable", [])),
                )
            except Exception:  # an unusual test: send it whole
                plans[t.name] = probes.plan_test(
                    t, bundle.leaf_paths(t.name), slice_it=False
                )
    bundle.__dict__["plans"] = plans
    if any(p.sliced for p in plans.values()):
        exports = runner.run_job(
            bundle, cells, None, mode="grade", unsafe=True, timeout=timeout
        )
        for question, tests in bundle.tests.items():
            result = scoring.score_question(
                bundle,
                question,
                exports.questions.get(question),
                exports.stores.get(question),
            )
            for test, outcome in zip(tests, result.tests, strict=True):
                if plans[test.name].sliced and not outcome.passed:
                    plans[test.name] = probes.plan_test(
                        test, bundle.leaf_paths(test.name), slice_it=False
                    )
    for name, plan in plans.items():
        bundle.reference[name]["plan"] = {
            "source": plan.source,
            "leaves": {str(a): v for a, v in plan.leaves.items()},
            "sliced": plan.sliced,
        }


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
