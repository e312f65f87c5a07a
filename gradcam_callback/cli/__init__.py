"""The command line: ``gradcam-callback explain`` (also ``python -m gradcam_callback``).

- :mod:`.explain`: the ``explain`` subcommand (image files in, heatmaps and a grid out).
- :mod:`.loading`: loading a trained model (a Lightning checkpoint or a plain module).
"""

from __future__ import annotations

from gradcam_callback.cli.explain import build_parser, main

__all__ = ["build_parser", "main"]
