"""Deployment: daemons (one process per node), the network-namespace testbed, topology files
and the state file that ``scaffold up`` writes (docs/deployment.md)."""
