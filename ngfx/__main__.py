"""``python -m ngfx ...``: the same command as ``ngfx ...``."""

import sys

from ngfx.cli import main

if __name__ == "__main__":
    sys.exit(main())
