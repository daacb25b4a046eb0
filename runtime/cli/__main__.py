"""`python -m clipedge.runtime.cli`: the `clipedge` command."""

import sys

from clipedge.runtime.cli.main import main

sys.exit(main())
