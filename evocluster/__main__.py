"""``python -m evocluster``: hand over to :func:`evocluster.cli.main`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
