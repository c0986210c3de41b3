"""The one guarded `import triton`: kernels are optional, so importing golf never needs triton.

Kernel modules import `triton`, `tl` and `TRITON_AVAILABLE` from here and define their
`@triton.jit` functions only under `if TRITON_AVAILABLE:`. On CPU, Triton runs kernels in its
interpreter only if TRITON_INTERPRET=1 is set before those decorators execute, i.e. before the
kernel modules are imported (see tests/kernels_env.py).
"""

import os

try:
    import triton
    import triton.language as tl

    TRITON_AVAILABLE = True
except ImportError:  # triton is the optional [gpu]/[dev] extra
    triton = None
    tl = None
    TRITON_AVAILABLE = False


def triton_interpreting() -> bool:
    """True when Triton kernels run in the (slow, CPU) interpreter rather than compiled."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
