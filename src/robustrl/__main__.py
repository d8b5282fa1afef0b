"""``python -m robustrl`` is the ``robustrl`` command."""

import sys

from robustrl.cli import main

sys.exit(main())
