"""``python -m lit_commeff.netlab``: check, measure, run and cleanup (see :mod:`lit_commeff.netlab.cli`)."""

import sys

from lit_commeff.netlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
