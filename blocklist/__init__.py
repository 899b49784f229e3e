"""Number lists, the call store and number feeds."""
