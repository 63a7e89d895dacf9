"""``python -m scaffold`` is the ``scaffold`` command."""

import sys

from .cli import main

sys.exit(main())
