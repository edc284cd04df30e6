"""peirce: event-driven actor system for asynchronous RL of language models."""

__version__ = "0.1.0"
