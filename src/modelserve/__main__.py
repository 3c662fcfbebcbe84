"""`python -m modelserve` is the same as the `modelserve` command."""

from modelserve.cli import app

app()
