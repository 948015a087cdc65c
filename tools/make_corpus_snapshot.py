"""Rebuild the course's corpus snapshot from this interpreter's standard library.

    python tools/make_corpus_snapshot.py

writes ``src/llmbook/data/corpus-snapshot.json.gz`` and prints its SHA-256, which
must then be copied into ``SNAPSHOT_SHA256`` in ``src/llmbook/data/corpus.py``. The
shipped snapshot was made with CPython 3.11.7; a rebuild on another version gives
other documents, and every recorded number of the course (splits, tokenizer, n-gram
baseline, the shipped models) would have to be recomputed.
"""

from __future__ import annotations

import sys
from unittest import mock

from llmbook.data import corpus
from llmbook.data.corpus import SNAPSHOT_PATH, write_snapshot
from llmbook.data.splits import compute_course_splits

if __name__ == "__main__":
    # Pass 1: the corpora alone. Pass 2: the course split, computed from them by the
    # pipeline Chapter 2 teaches, stored beside them.
    digest = write_snapshot(SNAPSHOT_PATH)
    with mock.patch.object(corpus, "SNAPSHOT_SHA256", digest):
        split = compute_course_splits("python")
    splits = {"python": {"train": split.train, "val": split.val, "test": split.test}}
    digest = write_snapshot(SNAPSHOT_PATH, splits=splits)
    size = SNAPSHOT_PATH.stat().st_size
    print(
        f"wrote {SNAPSHOT_PATH} ({size:,} bytes) from Python {sys.version.split()[0]}"
    )
    print(f'SNAPSHOT_SHA256 = "{digest}"')
