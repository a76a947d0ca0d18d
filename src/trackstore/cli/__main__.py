"""`python -m trackstore.cli`: the `trackstore` command without its console script."""

import sys

from trackstore.cli import main

sys.exit(main())
