"""Entry point for `python -m lgseg`."""

import sys

from lgseg.cli import main

sys.exit(main())
