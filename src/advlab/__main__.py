"""``python -m advlab``."""

import sys

from advlab.cli import main

sys.exit(main())
