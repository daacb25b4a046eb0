"""`python -m clipedge ...` is the `clipedge` command: for a venv whose scripts are not on PATH."""

import sys

from clipedge.runtime.cli.main import main

sys.exit(main())
