"""``python -m screening.cli``: the same as ``mamoru``."""

import sys

from screening.cli import main

sys.exit(main())
