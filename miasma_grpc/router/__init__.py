"""The router: hostnames to apps, through a real proxy that follows the port events."""
