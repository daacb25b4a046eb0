"""`python -m clipedge.runtime.cli`: the `clipedge` command."""

import sys

from clipedge.runtime.cli.main import main

if __name__ == "__main__":  # importing it (pkgutil.walk_packages, an IDE) must not run the command
    sys.exit(main())
