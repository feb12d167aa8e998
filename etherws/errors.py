"""The root of etherws' own exceptions (pure).

Every error etherws raises on purpose, with a message for the user, derives from
EtherwsError, so a catch site can tell "the input cannot be used" (one line, a clean
exit) from a bug (a traceback): a bug's ValueError is not an EtherwsError.
"""

from __future__ import annotations


class EtherwsError(Exception):
    """An error whose message is one line for the user."""
