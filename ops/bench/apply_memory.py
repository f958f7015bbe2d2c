"""Memory of applying a log in one process: `apply_memory.py BATCHES.pickle bulk|live`.

Loads the batches (a pickled list of lists of RawEvent) first, then applies them to a fresh
file: in bulk mode, as a rebuild does (`rebuild_file`), or batch by batch, as a projection
catching up does. Prints one JSON object: events/s, and RSS before applying (the loaded log),
at the peak and after the file is closed, in MiB. bench.py runs it in a child process so that
the peak is this work's alone.
"""

from __future__ import annotations

import gc
import json
import pickle
import resource
import sys
import tempfile
import time
from pathlib import Path

import psutil

from projections.projector import Projection
from projections.rebuild import rebuild_file


def main() -> None:
    batches = pickle.loads(Path(sys.argv[1]).read_bytes())
    mode = sys.argv[2]
    n = sum(len(b) for b in batches)
    me = psutil.Process()
    before = me.memory_info().rss
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
                "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / mib,
                "rss_after_mib": me.memory_info().rss / mib,
            }
        )
    )


if __name__ == "__main__":
    main()
