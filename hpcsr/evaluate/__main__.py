"""`python -m hpcsr.evaluate`: see hpcsr.evaluate.cli."""

import sys

from hpcsr.evaluate.cli import main

sys.exit(main())
