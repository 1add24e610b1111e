"""``python -m raydnas.cli``: the same as ``raydnas``."""

import sys

from .main import main

sys.exit(main())
