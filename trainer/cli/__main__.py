"""``python -m trainer.cli``: the same as ``edge-screen-train``."""

import sys

from trainer.cli import main

sys.exit(main())
