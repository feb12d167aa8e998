"""``python -m etherws.broker``: run the broker process."""

import sys

from etherws.broker.service import main

if __name__ == "__main__":
    sys.exit(main())
