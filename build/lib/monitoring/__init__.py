"""Conduit RT monitoring: connection monitor, metrics, health and the admin dashboard (growing)."""
