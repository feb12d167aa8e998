"""I/O helpers with no process of their own: shared memory, TAP devices, fd passing, logging...

Process packages (broker, workers, supervisor, ctl) use these and the pure modules directly
under ``etherws/``; nothing here imports a process package.
"""
