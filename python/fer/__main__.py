"""``python -m fer``: the fer command line (see :mod:`fer.cli`)."""

import sys

from fer.cli import main

if __name__ == "__main__":
    sys.exit(main())
