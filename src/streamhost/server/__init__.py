"""streamhost.server."""
