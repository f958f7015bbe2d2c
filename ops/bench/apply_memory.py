"""Memory of applying a log in one process: `apply_memory.py BATCHES.pickle bulk|live`.

Loads the batches (a pickled list of lists of RawEvent) first, then applies them to a fresh
file: in bulk mode, as a rebuild does (`rebuild_file`), or batch by batch, as a projection
catching up does. Prints one JSON object: events/s, and RSS before applying (the loaded log),
at the peak while applying (Linux: the peak is reset after loading) and after the file is
closed, in MiB. bench.py runs it in a child process so that the peak is this work's alone.
"""

from __future__ import annotations

import gc
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import psutil

from projections.projector import Projection
from projections.rebuild import rebuild_file


def _peak_rss_mib() -> float:
    """The peak RSS since the last reset (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    batches = pickle.loads(Path(sys.argv[1]).read_bytes())
    mode = sys.argv[2]
    n = sum(len(b) for b in batches)
    gc.collect()
    me = psutil.Process()
    before = me.memory_info().rss
    # Unpickling peaks above what stays loaded: reset the peak (Linux), so that the one
    # read at the end is this work's.
    Path("/proc/self/clear_refs").write_text("5")
    path = Path(tempfile.mkdtemp(prefix="bench-mem-")) / "projection.duckdb"
    started = time.perf_counter()
    if mode == "bulk":
        rebuild_file(path, iter(batches))
    else:
        projection = Projection(path)
        for batch in batches:
            projection.apply(batch)
        projection.close()
    elapsed = time.perf_counter() - started
    gc.collect()
    mib = 1 << 20
    print(
        json.dumps(
            {
                "events_per_s": n / elapsed,
                "rss_loaded_mib": before / mib,
                "rss_peak_mib": _peak_rss_mib(),
                "rss_after_mib": me.memory_info().rss / mib,
            }
        )
    )


if __name__ == "__main__":
    main()
