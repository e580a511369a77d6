"""SQLite persistence of desired state."""
