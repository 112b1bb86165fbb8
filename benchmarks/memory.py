"""Peak memory of a process, as the benchmarks report it."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (``VmHWM``; run it on workers with ``client.run``).

    Not ``ru_maxrss``: Linux carries that over fork and exec, so a freshly spawned Dask worker would
    report the client's peak at the moment it was started, not its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is
