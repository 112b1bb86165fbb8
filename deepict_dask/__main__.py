import sys

from deepict_dask.cli.main import main

sys.exit(main())
