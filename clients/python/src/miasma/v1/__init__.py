"""Generated stubs for miasma.v1 (do not edit: run `make protos`)."""
