"""``python -m privbench ...``: the same command line as ``python -m bench ...``."""

import sys

from bench.cli import main

sys.exit(main())
