"""The installed package is found from any working directory.

Started in a folder that holds a directory named dia_ode (the parent of a clone named dia_ode), Python
used to import that directory as a namespace package: `python -m dia_ode` failed and `dia_ode.runs`
resolved to a runs/ folder. setup.cfg maps the package root so the editable install is a plain path
entry, behind which a regular package always wins over a namespace portion.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dia_ode

PACKAGE_FILE = Path(dia_ode.__file__).resolve()


@pytest.fixture
def parent_of_clone(tmp_path: Path) -> Path:
    """A working directory whose dia_ode/ folder looks like a clone root (no __init__.py, a runs/ folder)."""
    (tmp_path / "dia_ode" / "runs").mkdir(parents=True)
    (tmp_path / "dia_ode" / "tests").mkdir()
    return tmp_path


def _python(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_from_parent_of_a_clone_finds_the_package(parent_of_clone):
    done = _python(parent_of_clone, "-c", "import dia_ode; print(dia_ode.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == PACKAGE_FILE


def test_python_m_dia_ode_from_parent_of_a_clone(parent_of_clone):
    done = _python(parent_of_clone, "-m", "dia_ode", "--version")
    assert done.returncode == 0, done.stderr
    assert dia_ode.__version__ in done.stdout
