"""Attacks on a real network: the control plane (identity, operators, owners, bounds)."""
