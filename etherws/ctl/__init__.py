"""etherws-ctl: the command line that controls a running switch (see ``cli``)."""
