"""Project scripts: stub generation, the private Docker engine, `make run`."""
