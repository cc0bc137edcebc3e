"""Runs ``python -m localagent`` under the module path that installations from before its move still use."""

import sys

from localagent.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
