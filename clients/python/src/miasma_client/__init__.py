"""Python client for Miasma gRPC (the typed client and CLI arrive with issue 3)."""
