"""gRPC edge: servicers, proto <-> domain conversion, errors -> rich status."""
