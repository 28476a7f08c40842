"""streamhost.gateway."""
