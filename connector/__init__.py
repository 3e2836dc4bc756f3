"""SMS integration connector: sources -> rules -> ledger -> sinks -> status write-back."""

__version__ = "0.1.0"
