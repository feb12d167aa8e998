"""``python -m etherws.supervisor``: the same as ``etherws-supervisor``."""

from etherws.supervisor.cli import console_main

console_main()
