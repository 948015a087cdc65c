"""``python -m llmbook.grading``: the same as ``llmbook-grade``."""

import sys

from llmbook.grading.cli import main

sys.exit(main())
