"""The layers of docs/architecture.md hold, and the check that keeps them would catch a break.

``make test`` runs ``lint-imports`` on the checkout; here it also runs on a copy of the packages
with one import pointing up (the ground importing the program), which must fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness_ext", "model_wrappers", "leaderboards", "muse_quant", "tasks")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} missing: install the test extra (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("layers")
    shutil.copy(ROOT / "pyproject.toml", root)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("*.pyc"))
    return root


def test_the_contracts_hold(copy: Path) -> None:
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("harness_ext/errors.py", "import muse_quant.cli", "Layers"),
        ("leaderboards/collect.py", "import model_wrappers.loading", "Layers"),
        ("leaderboards/collect.py", "import torch", "Publication reads results files only"),
        ("model_wrappers/precisions/base.py", "from . import registry", "circle"),
        ("model_wrappers/muse_lm.py", "import model_wrappers.llamacpp_lm", "runtimes"),
    ],
)
def test_an_import_pointing_up_fails(copy: Path, module: str, line: str, contract: str) -> None:
    path = copy / module
    original = path.read_text()
    path.write_text(f"{original}\n{line}  # noqa\n")
    try:
        result = lint_imports(copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout[-2000:]
