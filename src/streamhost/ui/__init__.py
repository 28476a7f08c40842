"""streamhost.ui."""
