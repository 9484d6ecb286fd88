"""`python -m local` (what `make dev` runs)."""

import sys

from local.stack import main

sys.exit(main())
