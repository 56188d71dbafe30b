"""`python -m nsjax.cli` is `nsjax`."""

import sys

from nsjax.cli import main

sys.exit(main())
