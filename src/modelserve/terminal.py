"""Where the command line says what went wrong: standard error, through rich, never folded.

rich folds text at the terminal's width, and at 80 columns where there is none (a container's log, a
pipe, a test). A message naming a long path came out cut across lines, which a log query, ``grep`` or
a test reading one line then missed. Soft wrapping writes each line whole; a terminal wraps it itself.
"""

from __future__ import annotations

from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
