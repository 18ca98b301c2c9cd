"""`sam2_jax.sharding`, the documented name of `sam2_jax.tracking.sharding` (the same module)."""

import sys

from .tracking import sharding

sys.modules[__name__] = sharding
