"""``python -m gradcam_callback explain ...``: see :mod:`gradcam_callback.cli`."""

import sys

from gradcam_callback.cli import main

sys.exit(main())
