"""The string-literal spans of every module of the corpus snapshot, as JSON on stdout.

Standalone (standard library only; it loads src/llmbook/responsible/strings.py by
path), so tests/unit/data/test_portability.py can run it under other Python versions and
check that Chapter 13's probe labels do not depend on the interpreter::

    python tests/portable_labels.py SNAPSHOT STRINGS_PY
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import sys


def summary(snapshot: str, strings_py: str) -> dict:
    spec = importlib.util.spec_from_file_location("llmbook_strings", strings_py)
    strings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strings)
    payload = json.loads(gzip.decompress(open(snapshot, "rb").read()))
    digest, count = hashlib.sha256(), 0
    for src in payload["corpora"]["source"]:
        spans = strings.string_spans(src)
        count += len(spans)
        digest.update(json.dumps(spans).encode())
    return {"python": sys.version.split()[0][:4], "spans": count,
            "spans_sha256": digest.hexdigest()}  # fmt: skip


if __name__ == "__main__":
    json.dump(summary(sys.argv[1], sys.argv[2]), sys.stdout)
    print()
