"""streamhost.engine."""
