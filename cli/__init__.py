"""The ``robustkit`` command line (installed as the package ``robustkit_cli``)."""
