"""`python -m sam2_jax.commands ...`: the same as `sam2-jax ...`."""

import sys

from .main import main

sys.exit(main())
