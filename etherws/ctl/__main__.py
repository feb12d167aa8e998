"""``python -m etherws.ctl.cli``: the same as the ``etherws-ctl`` console script."""

from etherws.ctl.cli import console_main

console_main()
