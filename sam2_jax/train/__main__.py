"""`python -m sam2_jax.train ...`: the same as `sam2-jax train ...`."""

import sys

from ..commands.main import main

sys.exit(main(["train", *sys.argv[1:]]))
