"""``python -m raydnas``: the command line (:mod:`raydnas.cli.main`)."""

import sys

from .cli.main import main

sys.exit(main())
