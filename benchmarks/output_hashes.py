"""Hash the decoded arrays and the tables of an output folder, to show a change leaves outputs identical.

Usage: ``python benchmarks/output_hashes.py DEMO_OUT > hashes.txt``, once with the old code and once
with the new, then ``diff``. Arrays are hashed decoded (so compression settings do not matter);
tables byte for byte (a STAR file's first line holds starfile's creation time).
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import zarr

root = Path(sys.argv[1])
out = {}
metas = [m for m in root.rglob("zarr.json") if json.loads(m.read_text()).get("node_type") == "array"]
metas += list(root.rglob(".zarray"))
for arr_meta in sorted(metas):
    d = arr_meta.parent
    a = zarr.open_array(str(d), mode="r")[...]
    out[str(d.relative_to(root))] = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16] + f" {a.dtype} {a.shape}"
for t in sorted(root.rglob("*")):
    if t.suffix in (".csv", ".star", ".json", ".tbl", ".tsv") and ".zarr" not in str(t) and "manifest" not in str(t) and t.is_file():
        out[str(t.relative_to(root))] = hashlib.sha256(t.read_bytes()).hexdigest()[:16]
for k, v in out.items():
    print(k, v)
