"""The benchmark, one module per section; `python scripts/bench.py` runs them (see its help).

Loaded by scripts/bench.py before digits and TensorFlow, so that what the user set is seen
here first.
"""

import os

# What the user set, before digits sets its default: the notebook's process gets exactly this.
ONEDNN_AS_GIVEN = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
TENSORFLOW_FIRST = "DIGITS_BENCH_TENSORFLOW_FIRST"
if os.environ.get(TENSORFLOW_FIRST):
    # The notebook's process: TensorFlow starts with its own defaults, as in a notebook that
    # never imported digits before it.
    import tensorflow  # noqa: F401
