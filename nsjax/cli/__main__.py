"""`python -m nsjax.cli` is `nsjax`."""

import sys

from nsjax.cli import console

sys.exit(console())
