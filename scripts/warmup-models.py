"""`python scripts/warmup-models.py`, as the runbooks run it (by hand, or as a pod's postStart hook):
`modelserve warmup` against the server in this pod.

The server is MODELSERVE_URL, or http://127.0.0.1:$HTTP_PORT (8000 by default); every `modelserve warmup`
option passes through (``--models a,b``, ``--count``, ``--token``, ``--wait``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
if SOURCE.is_dir():  # in a checkout, run the checkout's modelserve
    sys.path.insert(0, str(SOURCE))

from modelserve.cli import app  # noqa: E402

if __name__ == "__main__":
    os.environ.setdefault("MODELSERVE_URL", f"http://127.0.0.1:{os.environ.get('HTTP_PORT', '8000')}")
    app(["warmup", *sys.argv[1:]], prog_name="warmup-models.py")
