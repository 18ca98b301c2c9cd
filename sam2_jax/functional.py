"""`sam2_jax.functional`, the documented name of `sam2_jax.tracking.functional` (the same module)."""

import sys

from .tracking import functional

sys.modules[__name__] = functional
