"""Runtimes drive Docker toward an app's desired state (container mode; swarm later)."""
