"""`python -m hpcsr <command>`: the same as the `hpcsr` console script (for torchrun -m, srun, mpirun)."""

import sys

from hpcsr.cli import main

sys.exit(main())
