"""docs/columns.md: every column name recallscope writes, with its unit (from recallscope.columns.COLUMNS).

    python scripts/columns_table.py > docs/columns.md

tests/test_columns.py checks that the doc is this script's output and that every table and summary
record of a real run uses only these names.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from recallscope.columns import markdown  # noqa: E402

if __name__ == "__main__":
    sys.stdout.write(markdown())
