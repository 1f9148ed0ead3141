"""`python -m digits.callbacks`: list the registered callbacks, or with `--hooks` a run's hooks.

See `digits.callbacks.listing`; `digits-train --list-callbacks` prints the same list.
"""

import sys

from digits.callbacks.listing import main

sys.exit(main())
