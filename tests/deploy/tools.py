"""Where the tests find Debian's tools: .tools (unpacked by `make tools`), then PATH; the browser only in .tools."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def aws_cli(folder: Path) -> Path:
    """A folder holding an ``aws`` that runs the AWS CLI `make tools` installs into .tools/awscli, for a
    PATH; fails, saying how to get it, when it is not there."""
    installed = ROOT / ".tools" / "awscli"
    if not (installed / "awscli").is_dir():
        raise AssertionError("the AWS CLI is missing: `make test` (or `make tools`) installs it into .tools/awscli")
    folder.mkdir(parents=True, exist_ok=True)
    aws = folder / "aws"
    aws.write_text(f'#!/bin/sh\nPYTHONPATH="{installed}" exec "{sys.executable}" -m awscli "$@"\n')
    aws.chmod(0o755)
    return folder


def tool(name: str) -> str:
    """The path of ``name``; fails, saying how to get it, when it is nowhere."""
    unpacked = ROOT / ".tools" / "root" / "usr" / "bin" / name
    if unpacked.exists():
        return str(unpacked)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: `make test` (or `make tools`) unpacks Debian's package into .tools")
    return found


@dataclass(frozen=True)
class Browser:
    """Debian's headless chromium and its chromedriver, unpacked by `make tools`, and the environment they
    need to find the libraries unpacked beside them."""

    chromium: str
    chromedriver: str
    env: dict[str, str]


def browser() -> Browser:
    """Chromium and chromedriver from .tools; fails, saying how to get them, when they are not there.

    The binary is run itself, not Debian's /usr/bin/chromium launcher, which names /usr/lib/chromium."""
    root = ROOT / ".tools" / "root"
    chromium, chromedriver = root / "usr" / "lib" / "chromium" / "chromium", root / "usr" / "bin" / "chromedriver"
    for path in (chromium, chromedriver):
        if not path.exists():
            raise AssertionError(f"{path} is missing: `make test` (or `make tools`) unpacks chromium into .tools")
    libraries = [root / "usr" / "lib" / "x86_64-linux-gnu", root / "usr" / "lib" / "x86_64-linux-gnu" / "pulseaudio"]
    search = ":".join([*map(str, libraries), str(chromium.parent), os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    return Browser(str(chromium), str(chromedriver), {**os.environ, "LD_LIBRARY_PATH": search})
