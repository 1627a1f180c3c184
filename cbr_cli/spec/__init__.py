"""What to run: the pipeline types, the YAML reader, command-line flags, and the static
layer-stack analysis behind ``cbr shape``. Validated once, here.

May import :mod:`cbr_cli.errors`, :mod:`cbr_cli.core` and :mod:`cbr_cli.io`.
"""
