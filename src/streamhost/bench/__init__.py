"""streamhost.bench."""
