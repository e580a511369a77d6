"""Pure domain: port semantics, allocation, validation. Imports only the standard library."""
