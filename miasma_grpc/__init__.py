"""Miasma gRPC: run apps on Docker with Heroku-style port management.

Layering (dependencies point inward; ``tests/unit/test_layering.py`` checks it):

    api, store, runtime  ->  domain   (domain imports only the standard library)
    apps, reconcile      ->  domain, store, runtime.base
    server               ->  everything: the composition root
"""

__version__ = "0.1.0"
