"""etherws workers."""
