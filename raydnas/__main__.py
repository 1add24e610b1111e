"""``python -m raydnas``: the command line (:mod:`raydnas.cli`)."""

import sys

from .cli import main

sys.exit(main())
