"""``python -m benchmarks``: run every benchmark module (see :mod:`benchmarks.run`)."""

import sys

from benchmarks.run import main

sys.exit(main())
