"""``python -m scaffold`` is the ``scaffold`` command."""

import sys

from .cli.main import main

sys.exit(main())
