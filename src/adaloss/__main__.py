"""``python -m adaloss`` (and ``torchrun -m adaloss``) runs the command line."""

from __future__ import annotations

import sys

from adaloss.cli import main

if __name__ == "__main__":
    sys.exit(main())
