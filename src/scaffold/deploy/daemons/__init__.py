"""The daemons: one process per node (``controller``, ``switch``, ``host``), flags or a TOML
config, JSON logs, a clean stop on SIGTERM (docs/deployment.md). Their command-line entry
points are registered by ``scaffold.cli.daemons``."""
