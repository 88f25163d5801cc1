"""`python -m fpsim`: the same command line as the `fpsim` script."""

import sys

from fpsim.cli import main

sys.exit(main())
