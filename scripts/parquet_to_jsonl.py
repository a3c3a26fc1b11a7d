"""Converts a Hugging Face dataset parquet file (e.g. piqa's validation-00000-of-00001.parquet)
to JSON lines, one row per line, for `onebit-eval --tasks NAME=FILE.jsonl`.

usage: parquet_to_jsonl.py IN.parquet OUT.jsonl      (needs pyarrow; scripts/setup.sh installs it)

Nested columns (ARC's "choices": {"text": [...], "label": [...]}) stay nested; strings are
written as UTF-8. The output is written to OUT.jsonl.tmp and renamed, so it is never half-written.
"""
import json
import os
import sys

import pyarrow.parquet as pq


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    table = pq.read_table(src)
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        for batch in table.to_batches():
            for row in batch.to_pylist():
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, dst)
    print(f"{dst}: {table.num_rows} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
