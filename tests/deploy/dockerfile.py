"""A Dockerfile reader for the deploy tests: stages of instructions, with line continuations joined.

Enough of Docker's grammar for our files: comments, ``\\`` continuations, global ``ARG`` defaults
substituted into ``FROM``, ``FROM image AS name``, flags such as ``--from=builder``, and exec-form
(JSON) arguments. Heredocs and parser directives other than comments are not used, so not read.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    """One instruction: its keyword upper-cased, its ``--flags`` and what follows them."""

    keyword: str
    flags: dict[str, str]
    arguments: str

    def exec_form(self) -> list[str]:
        """The arguments as a JSON array (``["modelserve", "serve"]``); fails on the shell form."""
        value = json.loads(self.arguments)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.arguments}"
        return [str(item) for item in value]

    def words(self) -> list[str]:
        """The arguments split as a shell would."""
        return shlex.split(self.arguments)


@dataclass
class Stage:
    """A ``FROM`` and the instructions up to the next one."""

    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """This stage's instructions with ``keyword``, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Variables the stage's ``ENV`` instructions set (``KEY=value`` form)."""
        pairs = (word.split("=", 1) for i in self.all("ENV") for word in i.words())
        return {key: value for key, value in pairs}


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the file ends inside a continued line"
    return lines


def _instruction(line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    flags: dict[str, str] = {}
    rest = rest.strip()
    while match := re.match(r"--([\w-]+)=(\S+)\s*", rest):
        flags[match[1]] = match[2]
        rest = rest[match.end() :]
    return Instruction(keyword.upper(), flags, rest)


def parse(path: Path) -> list[Stage]:
    """The stages of the Dockerfile at ``path``, global ARG defaults substituted into their images."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        instruction = _instruction(line)
        if instruction.keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], instruction.arguments).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
        elif instruction.keyword == "ARG":
            key, _, default = instruction.arguments.partition("=")
            global_args[key] = default
    return stages
