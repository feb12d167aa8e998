"""etherws supervisor."""
