"""``python -m tidemark.native``: build the C fingerprint extension (see the package)."""

import sys

from tidemark.native import main

sys.exit(main())
