"""The demo's instance folder: wiped at the start of a run, removed at the end unless kept.

A marker file says "the demo made this folder", so ``--instance`` pointed at the wrong place by
mistake stops the run instead of deleting someone's files."""

from __future__ import annotations

import shutil
from pathlib import Path

MARKER = ".scrm-demo"


class InstanceFolderError(RuntimeError):
    pass


def prepare(folder: Path) -> Path:
    """An empty folder with the marker in it; returns its absolute path."""
    folder = folder.expanduser().resolve()
    if folder.exists():
        if not folder.is_dir():
            raise InstanceFolderError(f"{folder} exists and is not a folder")
        if any(folder.iterdir()) and not (folder / MARKER).exists():
            raise InstanceFolderError(
                f"{folder} is not empty and was not made by scrm demo; "
                "choose another folder with --instance (the demo wipes it at every start)"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by scrm demo; wiped at the start of every demo run\n")
    (folder / "logs").mkdir()
    return folder


def remove(folder: Path) -> None:
    if (folder / MARKER).exists():
        shutil.rmtree(folder, ignore_errors=True)
