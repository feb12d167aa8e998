"""etherws: Ethernet over WebSocket, a crash-isolated user-space virtual switch."""

__version__ = "2.0.0.dev0"
