"""streamhost: self-hosted LLM endpoints with response streaming."""

__version__ = "0.1.0"
