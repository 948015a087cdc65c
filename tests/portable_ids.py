"""What the course's data looks like on THIS interpreter, as JSON on stdout.

Standalone on purpose: it needs only the standard library and ``tokenizers`` (no
torch, no llmbook import), so tests/unit/data/test_portability.py can run it under other Python
versions (3.10, 3.12 as on Colab, 3.13) in a small virtual environment and compare
the output with tests/data/course_ids.json, recorded on 3.11::

    python tests/portable_ids.py SNAPSHOT TOKENIZER_JSON
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from array import array

from tokenizers import Tokenizer


def summary(snapshot: str, tokenizer_json: str) -> dict:
    data = open(snapshot, "rb").read()
    payload = json.loads(gzip.decompress(data))
    split = payload["splits"]["python"]
    tokenizer = Tokenizer.from_file(tokenizer_json)
    out = {
        "snapshot_sha256": hashlib.sha256(data).hexdigest(),
        "split_sizes": {part: len(split[part]) for part in ("train", "val", "test")},
        "vocab_size": tokenizer.get_vocab_size(),
    }
    for part in ("train", "val"):
        ids = [
            e.ids for e in tokenizer.encode_batch(split[part], add_special_tokens=False)
        ]
        flat = array("i", [i for doc in ids for i in doc])
        out[f"{part}_tokens"] = len(flat)
        out[f"{part}_ids_sha256"] = hashlib.sha256(flat.tobytes()).hexdigest()
        out[f"{part}_first_ids"] = [doc[:16] for doc in ids[:3]]
    out["sentence_ids"] = tokenizer.encode(
        "Return the number of items in a container."
    ).ids
    return out


if __name__ == "__main__":
    json.dump(summary(sys.argv[1], sys.argv[2]), sys.stdout, indent=1)
    print()
