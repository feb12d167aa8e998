"""``python -m benchlib``: tools/bench's Python part (run it through tools/bench)."""

import sys

from benchlib.main import main

sys.exit(main())
