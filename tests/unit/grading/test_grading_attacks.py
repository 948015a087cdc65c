"""Attack regression suite for llmbook-grade (Lab 2), in one sandboxed grading run.

Every attack reported against the grader (issues 12 and 28) is a submission here,
next to honest controls (full, partial, untouched, and the honest content some cheats
start from). The attacks know the real absolute paths of the autograder zip, the
submissions folder and the CSV (stronger than digging them out of /proc). One
`llmbook-grade` run with two workers grades them all; the tests then check that

- every file got exactly one row, sorted by name, and the CSV on disk is that, with
  no cell a spreadsheet would run as a formula and no control character;
- no cheat scores more than the honest content it contains: not by patching the
  comparisons, not by taking over the in-process harness and reporting the test's own
  expected values as its answers, not by importing the course's reference code;
- hidden tests do not reach the student's feedback, which holds scores and public
  test messages only;
- submissions that flood the export pipe, the disk, the memory, or hand in huge or
  deeply nested JSON, FIFOs, links and devices get a row each, and the grader's own
  memory stays under 1 GB;
- nothing outside the sandbox changed (hashes of the zip, every submission, a file
  beside the CSV), and the CSV holds exactly the grader's rows;
- no process started by a submission survives the run;
- crashes keep the points of the questions checked before them, naming the cell;
- in the labs whose tests check random draws (Lab 3's sampler, Lab 6's LoRA A) or
  outputs of layers the student makes (Lab 3's SwiGLU and block, Lab 4's 30 Adam
  steps), a taken-over harness that reports what makes each assert true (the test's
  target as the std, its expected value as the output, the losses halving, flags
  True, fabricated records for tests that raised) scores no more than the untouched
  notebook; a separate, smaller run per lab (``-k forge``).

Needs bubblewrap: `make test` installs it when missing (as root); elsewhere these
tests skip, saying so, unless LLMBOOK_REQUIRE_SANDBOX=1 (CI) makes that a failure.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from llmbook.grading import report, sandbox
from llmbook.grading.grade import GradeOptions, grade_submissions

ROOT = Path(__file__).resolve().parents[3]

LAB = "lab02_attention"
MARKER = "llmbook-attack-daemon-7f3a"  # in the daemons' command lines
TIMEOUT = 30.0  # CPU seconds; the wall-clock limit is 2 * 30 + 60


def require_sandbox() -> None:
    try:
        sandbox.check_sandbox()
    except sandbox.SandboxUnavailable as exc:
        if os.environ.get("LLMBOOK_REQUIRE_SANDBOX"):
            pytest.fail(f"the sandbox is required here but unavailable: {exc}")
        pytest.skip(f"no sandbox on this machine: {exc}")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def solution_sources(master: Path) -> list[str]:
    nb = nbformat.read(master, as_version=4)
    sources, inside = [], False
    for cell in nb.cells:
        text = cell.source.strip()
        if cell.cell_type == "raw" and text.startswith("# BEGIN SOLUTION"):
            inside = True
        elif cell.cell_type == "raw" and text.startswith("# END SOLUTION"):
            inside = False
        elif inside and cell.cell_type == "code":
            sources.append(cell.source)
    return sources


class Notebooks:
    """Builds Lab 2 submissions from the student notebook and the master's answers."""

    def __init__(self, student: nbformat.NotebookNode, answers: list[str]) -> None:
        self.student, self.answers = student, answers

    def answer_cells(self, nb):
        return [
            c for c in nb.cells if "otter_answer_cell" in c.metadata.get("tags", [])
        ]

    def make(self, answers: dict[int, str] | None = None, solved: int | None = None):
        """The student notebook with the first `solved` answers (default: all)."""
        nb = copy.deepcopy(self.student)
        for i, cell in enumerate(self.answer_cells(nb)):
            if solved is None or i < solved:
                cell.source = self.answers[i]
        for i, source in (answers or {}).items():
            self.answer_cells(nb)[i].source = source
        return nb

    def with_cell(self, nb, source: str, after: str | None = None):
        """`nb` with a code cell added after the code cell containing `after`."""
        cell = nbformat.v4.new_code_cell(source)
        if after is None:
            nb.cells.append(cell)
        else:
            index = next(
                i
                for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and after in c.source
            )
            nb.cells.insert(index + 1, cell)
        return nb


ZEROS = {  # answers that return tensors of the right shape, all zeros
    0: "def scaled_dot_scores(q, k):\n    return torch.zeros(*q.shape[:-1], k.shape[-2])",
    1: "def stable_softmax(scores, mask=None):\n    return torch.zeros_like(scores)",
}

PATCH_COMPARISONS = """\
import numpy as np
import torch
import torch.testing
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)
torch.testing.assert_close = lambda *a, **k: None
torch.isfinite = lambda t: torch.ones_like(t, dtype=torch.bool)
np.allclose = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
import builtins
builtins.isinstance = lambda *a: True
builtins.all = lambda *a: True
"""

OTTER_PATCH = """\
try:
    import otter.test_files.exception_test as et
    et.ExceptionTestFile.run = lambda self, env: None
    import otter.test_files.abstract_test as at
    at.TestFile.score = property(lambda self: 1200)
    at.TestFile._score = 1200
except Exception as exc:
    print("otter not patchable:", exc)
"""

REWRITE_TESTS = """\
import os, pathlib
for folder in ("tests", "../source/tests", "/autograder/source/tests", "/tmp/tests"):
    try:
        os.makedirs(folder, exist_ok=True)
        for q in range(1, 6):
            pathlib.Path(folder, f"q{q}.py").write_text(
                "from otter.test_files import test_case\\nOK_FORMAT = False\\n"
                f"name = 'q{q}'\\npoints = 100\\n"
                "@test_case(points=100)\\ndef test_ok():\\n    pass\\n"
            )
    except OSError:
        pass
"""

FORGE_EXPORTS = """\
import gc, json, pathlib
channel = next(o for o in gc.get_objects() if type(o).__name__ == "Channel")
for q in ("q1", "q2", "q3", "q4", "q5"):
    fake = {"question": q, "tests": [{"name": "x", "asserts": [], "error": None,
            "completed": True}]}
    channel.json(q + ".json", fake)
channel.json("done.json", {"done": True})
"""

# Issue 28, item 1: take over the harness in this process and report, for every
# leaf, the test's own expected value (any local that holds one) as the student's;
# item 3: raise the job's tests (hidden ones included) into the feedback.
HIJACK = """\
import gc, json, sys
from llmbook.grading import probes
main = sys.modules["__main__"]
H = main.Harness
harness = next(o for o in gc.get_objects() if isinstance(o, H))
ORACLES = ("expected", "theirs", "ref", "reference", "want", "greedy", "target")
original = probes.evaluate_nodes

def forged(nodes, env):
    values = original(nodes, env)
    oracle = [env[k] for k in ORACLES if k in env]
    for path in values:
        if oracle:
            values[path] = oracle[0]
    return values

probes.evaluate_nodes = forged
main.probes.evaluate_nodes = forged
leak = json.dumps(harness.job["questions"])
raise RuntimeError("LEAK " + leak[:3000])
"""

# item 2: forbidden library code by computed names; the llmbook reference by a built
# import (absent from the sandbox now); flagged, or failing, never full marks for free
EVASIONS = {
    1: "if True:\n    def stable_softmax(scores, mask=None):\n"
    "        import torch\n"
    "        if mask is not None:\n"
    "            scores = scores.masked_fill(~mask, float('-inf'))\n"
    "        return torch.nan_to_num(torch.softmax(scores, dim=-1))\n",
    3: "import torch\n"
    "def attention(q, k, v, mask=None):\n"
    "    ref = __import__('llm' + 'book.model.attention', fromlist=['x'])\n"
    "    return ref.scaled_dot_product_attention(q, k, v, mask)\n",
}
EVASION_CELL = """\
import base64, os, sys, torch
from os import kill as stop
sdpa = getattr(getattr(torch.nn, "func" + "tional"), "scaled_dot_" + "product_attention")
exec(base64.b64decode(b"eCA9IDE="))
table = vars(torch)
size = len(torch.__dict__)
if size < 0:
    stop(os.getpid(), 9)
loaded = sys.modules.get("torch") is torch
try:
    raise ValueError("x")
except ValueError as e:
    frame = e.__traceback__.tb_frame
"""

EXPORT_FLOOD = """\
import gc
channel = next(o for o in gc.get_objects() if type(o).__name__ == "Channel")
for i in range(8):
    channel.send(f"q{i}.json", b"[" + b"{}," * 20_000_000 + b"{}]")
"""

JSON_BOMB = """\
import gc
channel = next(o for o in gc.get_objects() if type(o).__name__ == "Channel")
channel.send("q4.json", b'{"question": "q4", "tests": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}")
channel.send("q5.json", b'{"question": "q5", "tests": [' + b"1" * 100_000 + b"]}")
"""

DISK_FILL = """\
import os
chunk = b"d" * (64 * 1024 * 1024)
for folder in (".", "/tmp", "/dev/shm"):
    for i in range(48):  # 3 GB per folder, if nothing stopped it
        try:
            with open(os.path.join(folder, f"fill{i}.bin"), "wb") as f:
                f.write(chunk)
        except OSError:
            break
for folder in (".", "/tmp", "/dev/shm"):
    for i in range(48):
        try:
            os.remove(os.path.join(folder, f"fill{i}.bin"))
        except OSError:
            pass
"""

MEMORY_FORKS = """\
import os
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        hog = "m" * (700 * 1024 * 1024)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""

# {paths} is filled with the real paths; any success would show in the scores/hashes
STEAL_AND_TAMPER = """\
import glob, json, os, pathlib, shutil, zipfile
stolen = []
targets = {paths!r}
for pattern in [targets["submissions"] + "/*.ipynb", "../*.ipynb", "/proc/*/cwd/*.ipynb"]:
    for path in glob.glob(pattern):
        try:
            nb = json.loads(pathlib.Path(path).read_text())
            stolen.append(nb)
        except Exception:
            pass
for nb in stolen:  # copy a classmate: run their answer cells here
    for cell in nb.get("cells", []):
        if "otter_answer_cell" in cell.get("metadata", {{}}).get("tags", []):
            try:
                exec("".join(cell["source"]), globals())
            except Exception:
                pass
for key in ("zip", "csv", "beside", "classmate"):
    try:
        pathlib.Path(targets[key]).write_text("tampered")
    except OSError:
        pass
for pid in os.listdir("/proc"):
    try:
        cmd = pathlib.Path("/proc", pid, "cmdline").read_bytes().split(b"\\0")
        cwd = os.readlink(f"/proc/{{pid}}/cwd")
        pathlib.Path(cwd, "planted.txt").write_text("x")
    except OSError:
        pass
try:
    with zipfile.ZipFile(targets["zip"]) as zf:
        stolen_tests = zf.namelist()
except Exception:
    stolen_tests = []
"""

DAEMON = f"""\
import os, subprocess, sys
subprocess.Popen(
    [sys.executable, "-c", "import time\\nwhile True: time.sleep(0.2)", "{MARKER}"],
    start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
if os.fork() == 0:
    os.setsid()
    os.execv("/bin/sleep", ["/bin/sleep", "300", "{MARKER}"])
"""

HUGE_OUTPUT = """\
import sys
for _ in range(200):
    sys.stdout.write("x" * 100_000 + "\\n")
import os
os.write(2, b"y" * 5_000_000)
try:
    with open("big.bin", "wb") as f:
        f.write(b"z" * (300 * 1024 * 1024))
except OSError as exc:
    print(exc)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, lab_builds):
    """Build Lab 2, write every submission, grade them all once; return what we saw."""
    require_sandbox()
    root = tmp_path_factory.mktemp("attacks")
    master = ROOT / "solutions" / f"{LAB}.ipynb"
    built = lab_builds(master)
    student = nbformat.reads(built.files[master.name].decode(), as_version=4)
    make = Notebooks(student, solution_sources(master))
    zip_path = root / "autograder" / f"{LAB}.zip"
    zip_path.parent.mkdir()
    zip_path.write_bytes(built.autograder_zip.read_bytes())
    subs = root / "submissions"
    subs.mkdir()
    out_dir = root / "grades"
    out_dir.mkdir()
    csv_path = out_dir / "grades.csv"
    beside = out_dir / "keep.txt"
    beside.write_text("the instructor's notes\n")
    paths = {
        "submissions": str(subs),
        "zip": str(zip_path),
        "csv": str(csv_path),
        "beside": str(beside),
        "classmate": str(subs / "a_full.ipynb"),
    }

    def write(name: str, nb) -> None:
        nbformat.write(nb, subs / f"{name}.ipynb")

    check = 'grader.check("q{}")'
    # honest controls
    write("a_full", make.make())
    write("partial_q12", make.make(solved=2))
    write("untouched", make.make(solved=0))
    write("zeros", make.make(ZEROS, solved=0))
    no_meta = make.make()
    del no_meta.metadata["otter"]
    write("no_otter_metadata", no_meta)
    # attacks on the test machinery
    # otter patching, score inflation, rewritten tests, forged export files: one
    machinery = make.with_cell(make.make(solved=0), OTTER_PATCH, "otter")
    machinery = make.with_cell(machinery, REWRITE_TESTS)
    write("cheat_test_machinery", make.with_cell(machinery, FORGE_EXPORTS))
    write(
        "cheat_patch_comparisons",
        make.with_cell(make.make(ZEROS, solved=0), PATCH_COMPARISONS, "import math"),
    )
    steal = STEAL_AND_TAMPER.format(paths=paths)
    write("cheat_steal_and_tamper", make.with_cell(make.make(solved=0), steal, "otter"))
    write("cheat_daemon", make.with_cell(make.make(solved=0), DAEMON, "otter"))
    # robustness
    exit_now = "import os\nos._exit(0)"
    write("crash_os_exit", make.with_cell(make.make(), exit_now, check.format(2)))
    kill = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    write("crash_kill9", make.with_cell(make.make(), kill, check.format(3)))
    write(
        "crash_infinite_loop",
        make.with_cell(make.make(), "while True:\n    pass", check.format(1)),
    )
    write("huge_output", make.with_cell(make.make(), HUGE_OUTPUT, check.format(1)))
    write(
        "memory_hog",
        make.with_cell(make.make(), "hog = bytearray(20 * 1024**3)", check.format(4)),
    )
    (subs / "garbage.ipynb").write_bytes(os.urandom(3000))
    (subs / "empty.ipynb").write_bytes(b"")
    (subs / "json_not_notebook.ipynb").write_text('{"name": "lab02", "answers": [1]}')
    (subs / "json_list.ipynb").write_text("[1, 2, 3]")
    (subs / "truncated.ipynb").write_text('{"cells": [')
    write("odd name ü (1)", make.make(solved=1))
    (subs / "not_a_notebook.txt").write_text("ignored: not .ipynb")
    # issue 28
    write(
        "cheat_hijack_untouched", make.with_cell(make.make(solved=0), HIJACK, "otter")
    )
    write("cheat_hijack_partial", make.with_cell(make.make(solved=2), HIJACK, "otter"))
    evasions = make.with_cell(make.make(EVASIONS, solved=0), EVASION_CELL, "otter")
    write("cheat_evasions", evasions)
    write(
        "dos_export_flood", make.with_cell(make.make(), EXPORT_FLOOD, check.format(3))
    )
    write("dos_json_bomb", make.with_cell(make.make(), JSON_BOMB))  # after the last
    write("dos_disk_fill", make.with_cell(make.make(), DISK_FILL, check.format(1)))
    write(
        "dos_memory_forks", make.with_cell(make.make(), MEMORY_FORKS, check.format(1))
    )
    big = make.make()
    big.cells.append(nbformat.v4.new_code_cell("x = 1" + "+1" * 20_000_000))
    write("dos_40mb_cell", big)
    long_cell = make.make()
    long_cell.cells.append(nbformat.v4.new_code_cell("x = 1" + "+1" * 150_000))
    write("dos_long_cell", long_cell)
    (subs / "dos_deep.ipynb").write_text("[" * 200_000 + "]" * 200_000)
    deep_meta = make.make()
    deep_meta.metadata["x"] = 0
    text = nbformat.writes(deep_meta).replace(
        '"x": 0', '"x": ' + "[" * 50_000 + "]" * 50_000
    )
    (subs / "dos_deep_metadata.ipynb").write_text(text)
    (subs / "dos_big_number.ipynb").write_text(
        nbformat.writes(deep_meta).replace('"x": 0', '"x": ' + "7" * 100_000)
    )
    (subs / "dos_many_objects.ipynb").write_text("[" + "{}," * 5_000_000 + "{}]")
    os.mkfifo(subs / "fifo.ipynb")
    (subs / "zero.ipynb").symlink_to("/dev/zero")
    (subs / "mallory.ipynb").symlink_to(subs / "a_full.ipynb")
    (subs / "passwd.ipynb").symlink_to("/etc/passwd")
    for name in (
        "=HYPERLINK(1)",
        "+1+1",
        "@SUM(1)",
        "-2+3",
        "a full",
        "a_full-0123456789",
        "evil\nok: 12.0",
    ):
        write(name, make.make(solved=0))

    files = sorted(p.name for p in subs.iterdir() if p.suffix == ".ipynb")
    before = {
        p.name: sha(p) for p in subs.iterdir() if p.is_file() and not p.is_symlink()
    }
    zip_hash = sha(zip_path)
    start = time.monotonic()
    limits = sandbox.Limits(timeout=TIMEOUT, sandbox_mb=1536)
    options = GradeOptions(timeout=TIMEOUT, workers=2, limits=limits)
    # The grader's own memory: this pytest worker's resident set, sampled while it
    # grades, minus what the worker held before (earlier tests in the same worker
    # raise ru_maxrss, so the high-water mark would measure them, not the grader).
    with RssSampler() as rss:
        rows = grade_submissions(zip_path, subs, csv_path, options)
    elapsed = time.monotonic() - start
    grader_rss_mb = rss.peak_mb - rss.before_mb
    time.sleep(0.5)  # let anything that escaped show itself
    survivors = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and MARKER.encode() in _cmdline(pid)
    ]
    return {
        "rows": {Path(r["file"]).stem: r for r in rows},
        "row_list": rows,
        "files": files,
        "csv": csv_path,
        "before": before,
        "after": {
            p.name: sha(p) for p in subs.iterdir() if p.is_file() and not p.is_symlink()
        },
        "grader_rss_mb": grader_rss_mb,
        "zip": (zip_hash, sha(zip_path)),
        "beside": beside.read_text(),
        "survivors": survivors,
        "elapsed": elapsed,
        "out_dir": out_dir,
        "subs": subs,
    }


class RssSampler:
    """Peak resident set of this process (MB) while the block runs, from
    /proc/self/status every 10 ms, and the value before it."""

    def __enter__(self) -> RssSampler:
        self.before_mb = self.peak_mb = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _cmdline(pid: str) -> bytes:
    try:
        return Path("/proc", pid, "cmdline").read_bytes()
    except OSError:
        return b""


def test_every_file_exactly_one_row_sorted(run):
    names = [r["file"] for r in run["row_list"]]
    assert names == run["files"] == sorted(names)
    with open(run["csv"], newline="", encoding="utf-8") as f:
        on_disk = list(csv.DictReader(f))
    expected = [report.csv_cell(n) for n in names]
    assert [r["file"] for r in on_disk] == expected, "the CSV on disk is the grader's"
    for disk, row in zip(on_disk, run["row_list"], strict=True):
        assert disk["total"] == str(row["total"]) and disk["status"] == row["status"]
    assert all(
        len(r["sha256"]) == 64 for r in run["row_list"] if r["status"] != "error"
    )


def test_honest_controls(run):
    rows = run["rows"]
    assert rows["a_full"]["total"] == 12.0 and rows["a_full"]["status"] == "ok"
    assert rows["untouched"]["total"] == 0.0
    assert rows["partial_q12"]["q1"] == 1.0 and rows["partial_q12"]["q2"] == 3.0
    assert rows["partial_q12"]["total"] == 4.0
    assert rows["odd name ü (1)"]["total"] == 1.0
    assert rows["no_otter_metadata"]["total"] == 12.0
    assert "graded as lab02_attention" in rows["no_otter_metadata"]["error"]
    assert all(not rows[n]["flags"] for n in ("a_full", "partial_q12", "untouched"))


@pytest.mark.parametrize(
    ("cheat", "honest"),
    [
        ("cheat_test_machinery", "untouched"),
        ("cheat_patch_comparisons", "zeros"),
        ("cheat_steal_and_tamper", "untouched"),
        ("cheat_daemon", "untouched"),
    ],
)
def test_cheats_score_no_more_than_their_honest_content(run, cheat, honest):
    rows = run["rows"]
    assert rows[cheat]["status"] != "error", rows[cheat]
    for q in ("q1", "q2", "q3", "q4", "q5", "total"):
        assert rows[cheat][q] <= rows[honest][q], (cheat, q, rows[cheat], rows[honest])


def test_patching_and_tampering_are_flagged(run):
    flags = run["rows"]["cheat_patch_comparisons"]["flags"]
    assert "replaces torch.allclose" in flags and "imports builtins" in flags
    assert "reads /proc" in run["rows"]["cheat_steal_and_tamper"]["flags"]


def test_nothing_outside_the_sandbox_changed(run):
    assert run["before"] == run["after"], "a submission file changed"
    assert run["zip"][0] == run["zip"][1], "the autograder zip changed"
    assert run["beside"] == "the instructor's notes\n"
    assert not list(run["subs"].parent.rglob("planted.txt"))
    assert not (run["subs"] / "tests").exists()


def test_no_process_survives(run):
    assert run["survivors"] == [], "a daemon started by a submission is still running"


@pytest.mark.parametrize(
    ("name", "kept", "where"),
    [
        ("crash_os_exit", 4.0, "in cell"),
        ("crash_kill9", 6.0, "killed (SIGKILL) in cell"),
        ("crash_infinite_loop", 1.0, "in cell 10"),  # CPU or, on a busy machine, wall
    ],
)
def test_a_crash_keeps_the_points_checked_before_it(run, name, kept, where):
    row = run["rows"][name]
    assert row["status"] == "incomplete", row
    assert row["total"] == kept, row
    assert where in row["error"], row
    if name == "crash_infinite_loop":
        assert "CPU time" in row["error"] or "wall-clock" in row["error"], row


def test_output_and_memory_limits_do_not_cost_the_answers(run):
    assert run["rows"]["huge_output"]["total"] == 12.0, run["rows"]["huge_output"]
    hog = run["rows"]["memory_hog"]
    assert hog["total"] == 12.0, hog  # the allocation fails inside; the rest runs


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("garbage", "not valid JSON"),
        ("empty", "not valid JSON"),
        ("truncated", "not valid JSON"),
        ("json_not_notebook", "valid JSON, but an object without a 'cells' list"),
        ("json_list", "valid JSON, but list without a 'cells' list"),
    ],
)
def test_unreadable_files_are_error_rows_with_a_reason(run, name, message):
    row = run["rows"][name]
    assert row["status"] == "error" and message in row["error"], row


def test_feedback_report_per_submission(run):
    folder = run["out_dir"] / "grades_feedback"
    reports = sorted(p.name for p in folder.iterdir())
    assert len(reports) == len(run["files"])
    text = (folder / "untouched.txt").read_text()
    assert (
        "failed test_q1_small_example: scaled_dot_scores must return a tensor" in text
    )
    assert "failed 2 hidden tests" in text, text
    assert "q1_batched_odd_lengths" not in text and "torch.randn" not in text
    crash = (folder / "crash_kill9.txt").read_text()
    assert "killed (SIGKILL) in cell" in crash and "q4: 0 / 3" in crash


@pytest.mark.parametrize(
    ("cheat", "honest"),
    [
        ("cheat_hijack_untouched", "untouched"),
        ("cheat_hijack_partial", "partial_q12"),
        ("dos_export_flood", "a_full"),
        ("dos_json_bomb", "a_full"),
        ("dos_disk_fill", "a_full"),
        ("dos_memory_forks", "a_full"),
        ("mallory", "untouched"),
    ],
)
def test_issue_28_attacks_score_no_more_than_honest(run, cheat, honest):
    rows = run["rows"]
    assert rows["a_full"]["total"] == 12.0, rows["a_full"]  # the honest copy
    for q in ("q1", "q2", "q3", "q4", "q5", "total"):
        mine = rows[cheat][q] or 0.0
        assert mine <= rows[honest][q], (cheat, q, rows[cheat], rows[honest])


def test_taking_over_the_harness_gains_nothing_and_leaks_no_hidden_test(run):
    rows, folder = run["rows"], run["out_dir"] / "grades_feedback"
    assert rows["cheat_hijack_untouched"]["total"] == 0.0
    assert rows["cheat_hijack_partial"]["total"] == rows["partial_q12"]["total"]
    for name in ("cheat_hijack_untouched", "cheat_hijack_partial"):
        text = (folder / f"{name}.txt").read_text()
        assert "LEAK" not in text and "hidden" in text, text
        for leaked in ("test_q1_batched_odd_lengths", "randn", "__llmbook_record__"):
            assert leaked not in text, (leaked, text)


def test_evasions_are_flagged_and_the_reference_code_is_absent(run):
    # The answers are real, if forbidden: q2 uses torch.softmax (torch cannot be
    # absent), which the flags point at; q4 imports the course's reference
    # attention, which is not in the sandbox, so it scores nothing.
    row = run["rows"]["cheat_evasions"]
    assert row["q4"] == 0.0, row
    for flag in (
        "q2: calls softmax",  # a definition inside `if True:` is answer code
        "calls getattr with a computed name",
        "calls exec",
        "imports base64",
        "calls vars",
        "uses introspection (__dict__)",
        "uses introspection (tb_frame)",
        "calls os.kill (as stop)",
    ):
        assert flag in row["flags"], (flag, row["flags"])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("dos_40mb_cell", "a notebook over 20 MB is not graded"),
        ("dos_long_cell", "characters of code (at most 100,000 per cell)"),
        ("dos_deep", "JSON nested too deeply"),
        ("dos_deep_metadata", "JSON nested too deeply"),
        ("dos_big_number", "a number with too many digits"),
        ("dos_many_objects", "more than 1,000,000 JSON objects and arrays"),
        ("fifo", "a FIFO (named pipe): only regular files are graded"),
        ("zero", "a symbolic link: only regular files are graded"),
        ("mallory", "a symbolic link: only regular files are graded"),
        ("passwd", "a symbolic link: only regular files are graded"),
    ],
)
def test_oversized_deep_and_irregular_files_get_a_clean_error_row(run, name, message):
    row = run["rows"][name]
    assert row["status"] == "error" and message in row["error"], row
    assert "crashed" not in row["error"]
    if name in ("fifo", "zero", "mallory", "passwd"):
        assert row["sha256"] == "", row  # nothing that is not a regular file is hashed


def test_exports_and_memory_are_bounded(run):
    rows = run["rows"]
    flood = rows["dos_export_flood"]
    assert (
        flood["status"] == "incomplete" and "exported more than 64 MB" in flood["error"]
    )
    assert flood["q1"] == 1.0 and flood["q2"] == 3.0, flood  # exported before the flood
    bomb = rows["dos_json_bomb"]
    assert bomb["q4"] == 0.0 and bomb["q5"] == 0.0, bomb  # unreadable exports: lost
    assert rows["dos_disk_fill"]["total"] == 12.0, rows["dos_disk_fill"]
    forks = rows["dos_memory_forks"]
    assert forks["total"] == 12.0, forks  # the children die, the notebook goes on
    assert run["grader_rss_mb"] < 1024, f"grader RSS grew {run['grader_rss_mb']:.0f} MB"
    print(
        f"grader RSS grew {run['grader_rss_mb']:.0f} MB while grading; graded in {run['elapsed']:.0f} s"
    )
    for name in sorted(rows):
        row = rows[name]
        print(f"  {name!r}: {row['total']} {row['status']} {row['error'][:90]!r}")


def test_csv_cells_are_neutralised_and_names_clean(run):
    with open(run["csv"], newline="", encoding="utf-8") as f:
        on_disk = list(csv.DictReader(f))
    for row in on_disk:
        for value in row.values():
            assert not value.startswith(report.FORMULA), row
            assert "\n" not in value and "\x1b" not in value, row
    files = {r["file"] for r in on_disk}
    assert "'=HYPERLINK(1).ipynb" in files and "'-2+3.ipynb" in files
    assert "evil ok: 12.0.ipynb" in files


def test_feedback_names_are_unique_and_stable(run):
    folder = run["out_dir"] / "grades_feedback"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == len(set(names)) == len(run["files"])
    assert "a_full.txt" in names  # the honest name keeps its own
    assert (folder / "a_full.txt").read_text().startswith("Feedback for a_full.ipynb")
    hashed = [n for n in names if n.startswith("a_full-")]
    assert len(hashed) == 2, names  # "a full" and "a_full-0123456789": hashed names
    assert all(n.isascii() and "\n" not in n for n in names)


def test_sandbox_hash_seed_no_user_namespaces_no_host_paths(tmp_path):
    require_sandbox()
    code = (
        "import os, sys\n"
        "print(sys.flags.hash_randomization, hash('llmbook'))\n"
        "print(repr(open('/proc/1/cmdline').read()))\n"
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "made = libc.unshare(0x10000000) == 0\n"  # CLONE_NEWUSER
        "print('userns: created' if made else f'userns: {ctypes.get_errno()}')\n"
        "print('llmbook.model' if os.path.exists('/opt/llmbook-grader/llmbook/model') "
        "else 'no llmbook.model')\n"
    )
    args = sandbox.bwrap_args(
        sandbox.Limits(), sandbox.Isolation(("llmbook.utils",), ("peft",)), tmp_path
    )
    args_fd, seccomp_fd = os.memfd_create("a", 0), os.memfd_create("s", 0)
    os.write(seccomp_fd, sandbox.no_userns_filter())
    os.lseek(seccomp_fd, 0, os.SEEK_SET)
    args += ["--seccomp", str(seccomp_fd)]
    os.write(args_fd, b"".join(a.encode() + b"\0" for a in args))
    os.lseek(args_fd, 0, os.SEEK_SET)
    command = sandbox.command_argv([sys.executable, "-s", "-P", "-c", code])
    argv = ["bwrap", "--args", str(args_fd), *command]
    out = subprocess.run(
        argv, capture_output=True, text=True, pass_fds=[args_fd, seccomp_fd], timeout=60
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("0 "), out  # PYTHONHASHSEED=0 is honoured
    assert str(tmp_path) not in lines[1] and "llmbook-grade-" not in lines[1], lines
    assert lines[2] == "userns: 1", lines  # EPERM
    assert lines[3] == "no llmbook.model", lines


def test_whole_sandbox_memory_limit(tmp_path):
    """Three processes of 300 MB each in a sandbox of 512 MB: the kernel kills one."""
    require_sandbox()
    limits = sandbox.Limits(timeout=20, sandbox_mb=512)
    group = sandbox.Cgroup(limits)
    available = bool(group.procs)
    group.close()
    if not available:
        pytest.skip("no cgroup for the grader here: only per-process limits hold")
    cell = MEMORY_FORKS.replace("700", "300")
    job = {
        "mode": "grade",
        "cells": [{"index": 0, "source": cell}],
        "anchors": {},
        "questions": {},
    }
    export = tmp_path / "export"
    export.mkdir()
    result, sent = sandbox.run_untrusted(job, export, limits)
    assert sent.oom, (result, sent)
    assert sent.peak_mb is not None and sent.peak_mb <= 512 + 1, sent
    assert (export / "done.json").is_file()  # the harness itself went on


def test_no_run_hangs(run):
    # About a minute on an idle 2-core machine; the bound only catches a hang.
    assert run["elapsed"] < 900, (
        f"grading {len(run['files'])} files took {run['elapsed']:.0f} s"
    )


# Issue 28, item 1, in the labs whose tests once ran whole in the sandbox: take over
# the harness and report, for every leaf, what makes its assert true. Tensors the
# student's code should fill are filled with values at the bound (the bound checks
# hold); a statistic gets the test's target, an output the expected value the test
# computed, a loss list halves, a flag or an error becomes True; a test that raised
# (the untouched stubs) gets a fabricated record for every assert the job names.
FORGE_FREE = """\
import math, sys, torch
from llmbook.grading import codec, probes
main = sys.modules["__main__"]
H = main.Harness
evaluate, run_test = probes.evaluate_nodes, H.run_test

def fake_draw(shape, bound):  # values at +-bound: the bound checks hold
    signs = torch.ones(shape).flatten()
    signs[1::2] = -1
    return (bound * signs).reshape(shape)

def bound_of(env):
    if "bound" in env:
        return env["bound"]
    if "target" in env:
        return 2 * env["target"] / 0.87962566103423978
    return 0.05

MADE = {  # what a stub that returns None should have returned
    "w": lambda b: fake_draw((40, 60), b),
    "first": lambda b: fake_draw((4, 6), b),
    "second": lambda b: -fake_draw((4, 6), b),
    "small": lambda b: fake_draw((3, 5), b).double(),
}

def forged(nodes, env):
    bound = bound_of(env)
    for name in ("w", "first", "second", "a", "fresh"):
        value = env.get(name)
        if isinstance(value, torch.Tensor) and not value.requires_grad:
            value.copy_(fake_draw(value.shape, bound))
    layer = env.get("layer")
    if isinstance(getattr(layer, "weight", None), torch.Tensor):
        with torch.no_grad():
            layer.weight.copy_(fake_draw(layer.weight.shape, bound))
    values = evaluate(nodes, env)
    for path, node in nodes.items():
        source = probes.ast.unparse(node)
        if source == "std" and "target" in env:
            values[path] = env["target"]
        elif source == "out" and "w" in env:
            values[path] = env["w"]
        elif source == "out" and "layer" in env:
            values[path] = env["layer"].weight
        elif values[path] is None and source in MADE:
            values[path] = MADE[source](bound)
        elif source in ("out", "y", "got", "mine_q"):
            for oracle in ("expected", "ref_q", "theirs", "want"):
                if oracle in env:
                    values[path] = env[oracle]
                    break
        elif source == "losses":
            values[path] = [4.0] + [1.0] * 29
        elif isinstance(values[path], (bool, BaseException)):
            values[path] = True
    return values

FAKES = {"a": lambda: fake_draw((8, 400), 0.05), "fresh": lambda: -fake_draw((8, 400), 0.05),
         "b": lambda: torch.zeros(50, 8),
         "mine_q": lambda: torch.zeros(7), "ref_q": lambda: torch.zeros(7), "losses": lambda: [4.0] + [1.0] * 29}

def forged_test(self, question, test, store):
    record = run_test(self, question, test, store)
    if record.get("error"):  # the stub raised: report every assert as passing
        record = {"name": test["name"], "error": None, "completed": True, "asserts": []}
        for index, leaves in test.get("leaves", {}).items():
            values = {p: FAKES.get(s, lambda: True)() for p, s in leaves.items()}
            record["asserts"].append(
                {"a": int(index), "leaves": self.encode_leaves(values, store)}
            )
    return record

probes.evaluate_nodes = forged
main.probes.evaluate_nodes = forged
H.run_test = forged_test
"""

FREE_LABS = ["lab03_transformer_block", "lab04_training", "lab06_lora"]


@pytest.fixture(scope="module", params=FREE_LABS)
def forge_run(request, tmp_path_factory, lab_builds):
    """Build one lab, grade its solution, its untouched notebook and the forger."""
    require_sandbox()
    lab = request.param
    root = tmp_path_factory.mktemp(f"forge-{lab}")
    master = ROOT / "solutions" / f"{lab}.ipynb"
    built = lab_builds(master)
    student = nbformat.reads(built.files[master.name].decode(), as_version=4)
    make = Notebooks(student, solution_sources(master))
    subs = root / "submissions"
    subs.mkdir()
    nbformat.write(make.make(), subs / "a_full.ipynb")
    nbformat.write(make.make(solved=0), subs / "untouched.ipynb")
    forger = make.with_cell(make.make(solved=0), FORGE_FREE, "otter")
    nbformat.write(forger, subs / "cheat_forge_free.ipynb")
    limits = sandbox.Limits(timeout=120, sandbox_mb=3072)
    options = GradeOptions(timeout=120, workers=2, limits=limits)
    csv_path = root / "grades.csv"
    rows = grade_submissions(built.autograder_zip, subs, csv_path, options)
    return {
        "rows": {Path(r["file"]).stem: r for r in rows},
        "feedback": root / "grades_feedback",
        "zip": built.autograder_zip,
    }


def test_forge_takeover_scores_no_more_than_the_untouched_notebook(forge_run):
    rows = forge_run["rows"]
    full, untouched = rows["a_full"], rows["untouched"]
    assert full["status"] == "ok" and full["total"] == full["possible"], full
    cheat = rows["cheat_forge_free"]
    assert cheat["status"] == "ok", cheat
    questions = [k for k in full if k.startswith("q")] + ["total"]
    for q in questions:
        assert cheat[q] <= untouched[q], (q, cheat, untouched)
    text = (forge_run["feedback"] / "cheat_forge_free.txt").read_text()
    assert "hidden" in text and "__llmbook_record__" not in text, text


def test_forge_labs_send_no_test_whole_to_the_sandbox(forge_run):
    """No test of these labs runs whole in the sandbox: each is cut to the statements
    that call the student's code, so no hidden test's expected values, conditions or
    messages enter it, and the free leaves are tensors the student's code returned."""
    from llmbook.grading.bundle import load_bundle

    bundle = load_bundle(forge_run["zip"])
    whole = sorted(name for name, plan in bundle.plans.items() if not plan.sliced)
    assert whole == [], whole
