"""`python -m sam2_jax.train ...`: the same as `sam2-jax train ...`."""

import sys

from .loop import main

sys.exit(main())
