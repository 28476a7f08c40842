"""streamhost.client."""
