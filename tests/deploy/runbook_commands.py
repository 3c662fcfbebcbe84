"""The `kubectl` and `docker-compose` commands of a runbook, read as a shell and kubectl read them.

A command is a line of a bash code block (or an inline code span) that starts with ``kubectl`` or
``docker-compose``, or a ``watch '...'`` around one, with its ``\\`` continuations and multi-line quoted
arguments (``--patch '...'``) joined. Only the first stage of a pipeline is the command; placeholders
such as ``<pod-name>`` stay placeholders. Run as a module, it prints the commands of the files named, in
the form ``runbook_commands.txt`` keeps them:

    python -m tests.deploy.runbook_commands RUNBOOK.md...
"""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

STARTS = re.compile(r"^(kubectl|docker-compose)\s|^watch\b.*'kubectl\s")
INLINE = re.compile(r"`((?:kubectl|docker-compose) [^`]+)`")
SHELL_FENCES = {"bash", "sh", "shell", "console"}
PLACEHOLDER = re.compile(r"<([A-Za-z][\w.-]*)>")
# Flags of kubectl and docker-compose that take a value as the next word (`-n model-serving`).
VALUED = {
    "-n", "--namespace", "-l", "--selector", "-c", "--container", "-o", "--output", "--context", "--tail",
    "--replicas", "--image", "--restart", "-p", "--patch", "--type", "--sort-by", "--target", "-f",
    "--filename", "-k", "--kustomize", "--from-literal", "--from-file", "--cert", "--key", "--as",
    "--docker-server", "--docker-username", "--docker-password", "--docker-email", "--limits",
    "--requests", "--raw", "--since",
}  # fmt: skip
# Verbs whose next word is part of the verb: `rollout restart`, `set env`, `create secret generic`.
TWO_WORD = {"rollout", "set", "create", "top", "auth", "config"}


@dataclass(frozen=True)
class Command:
    """One command as a runbook writes it, and where."""

    source: str
    text: str

    def words(self) -> list[str]:
        """The first pipeline stage as the shell splits it; a ``watch '...'`` is unwrapped."""
        joined = PLACEHOLDER.sub(r"@\1@", re.sub(r"\\\n\s*", " ", self.text))
        lexer = shlex.shlex(joined, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for word in lexer:
            if word in {"|", "||", "&&", ";", ">", ">>", "&", "2>", "<"}:
                break
            words.append(word)
        if words and words[0] == "watch":
            inner = next(w for w in words if w.startswith("kubectl "))
            return Command(self.source, inner).words()
        return words


@dataclass
class Invocation:
    """A kubectl (or docker-compose) command line taken apart: verb, positional words, flags, and what runs
    in the container after ``--``."""

    program: str
    verb: list[str]
    positional: list[str]
    flags: dict[str, list[str]] = field(default_factory=dict)
    inside: list[str] = field(default_factory=list)

    def flag(self, *names: str) -> str | None:
        """The last value of the first of ``names`` given, or None."""
        for name in names:
            if self.flags.get(name):
                return self.flags[name][-1]
        return None


def is_placeholder(word: str) -> bool:
    """Whether ``word`` stands for a name the reader fills in (``<pod-name>``, ``<DEPLOYMENT>``)."""
    return "@" in word


def parse(command: Command) -> Invocation:
    """The command's words sorted into an ``Invocation``."""
    words = command.words()
    program, rest = words[0], words[1:]
    flags: dict[str, list[str]] = {}
    positional: list[str] = []
    inside: list[str] = []
    index = 0
    while index < len(rest):
        word = rest[index]
        index += 1
        if word == "--":
            inside = rest[index:]
            break
        if word.startswith("-") and len(word) > 1:
            name, equals, value = word.partition("=")
            # `logs -f` follows (kubectl's and docker-compose's); elsewhere -f names a file.
            follows = name == "-f" and positional[:1] == ["logs"]
            if not equals and name in VALUED and not follows and index < len(rest):
                value = rest[index]
                index += 1
            flags.setdefault(name, []).append(value)
            continue
        positional.append(word)
    verb = positional[:1]
    if verb and verb[0] in TWO_WORD and len(positional) > 1:
        verb = positional[:2]
        if verb == ["create", "secret"] and len(positional) > 2:
            verb = positional[:3]
    return Invocation(program, verb, positional[len(verb) :], flags, inside)


def extract(text: str, source: str) -> list[Command]:
    """The commands of a Markdown text: bash code blocks' lines and inline code spans, in order."""
    lines = text.splitlines()
    commands: list[Command] = []
    language: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        stripped = line.strip()
        if stripped.startswith("```"):
            # An opening fence names its language; a runbook that forgot to close a block reopens one.
            info = stripped[3:].strip()
            language = info if (language is None or info) else None
            continue
        if language is None:
            commands += [Command(source, span) for span in INLINE.findall(line)]
            continue
        if language not in SHELL_FENCES or not STARTS.match(stripped):
            continue
        block = [line]
        while not _complete("\n".join(block)) and index < len(lines):
            block.append(lines[index])
            index += 1
        commands.append(Command(source, textwrap.dedent("\n".join(block)).strip()))
    return commands


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(PLACEHOLDER.sub("x", text), comments=True)
    except ValueError:  # a quote still open: the argument goes on on the next line
        return False
    return True


def load(path: Path) -> list[Command]:
    """The commands of a file written by this module: ``## source`` headings, then commands."""
    commands: list[Command] = []
    source = path.name
    for block in re.split(r"\n(?=## |(?:kubectl|docker-compose|watch) )", path.read_text()):
        if block.startswith("## "):
            heading, _, block = block.partition("\n")
            source = heading[3:].strip()
        text = block.strip()
        if text and not text.startswith("#"):
            commands.append(Command(source, text))
    return commands


def main(paths: list[str]) -> None:
    """Print the commands of each runbook, under a heading with its title (its first line)."""
    for name in paths:
        text = Path(name).read_text()
        front = re.match(r"---\n.*?^title: \"?(.+?)\"?$", text, re.S | re.M)
        title = front[1] if front else text.lstrip().splitlines()[0].lstrip("# ").strip()
        print(f"## {title}")
        for command in extract(text, title):
            print(command.text)
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
