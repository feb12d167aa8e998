"""etherws broker."""
