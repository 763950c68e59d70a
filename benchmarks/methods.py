"""Method names used by the benchmarks: an ``initialize`` method, optionally with the relay structure
(``"spike_aware:relay"``, ``"calibrated:relay"``). The parsing lives in ``examples/common.py``, shared with the
examples."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

from common import split_method  # noqa: E402,F401  (examples/common.py)
