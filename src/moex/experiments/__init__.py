"""Paper experiments, each one command: ``moex experiment chess``."""
