"""A module the zygote tests run as `python -m tests.local.zygote_app` (see its __main__)."""
