"""ccproxyd: the Anthropic Messages API in front of OpenAI-compatible providers."""

__version__ = "0.1.0"
