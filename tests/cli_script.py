"""A LightningCLI entry point for tests/test_cli_config.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch.cli import LightningCLI

from tests.lit_helpers import LitTiny, StripeData

if __name__ == "__main__":
    LightningCLI(LitTiny, StripeData, save_config_kwargs={"overwrite": True})
