"""``python -m mlgauge.ops``: compile mlgauge's C++ operators ahead of time."""

import sys

from mlgauge.ops.build import main

sys.exit(main())
