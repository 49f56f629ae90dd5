"""gptexp: an experiment platform for small GPT-style language models."""

__version__ = "0.1.0"
