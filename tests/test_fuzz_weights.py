"""Seeded fuzz of the weights boundary: ``read_state_dict`` and ``inspect --weights``.

Every hostile file gives a clean state_dict or a ``WeightsError`` that names the file
(by its name, never a server path) in one line; nothing else may escape.  Sources: a
small real state_dict saved by torch.save (zip format and the old pickle format) and by
safetensors, and the real MobileNetV2 checkpoint (cut short a few times: it is 14 MB).
"""
import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from core.models.checkpoint import read_state_dict
from core.cli import main as cli_main
from core.errors import WeightsError
from tests.test_fuzz_kit import FOREIGN, Tally, cut_offsets, flipped, random_blobs, report_at_end

TALLY = Tally("weights: read_state_dict")
ROOT = Path(__file__).resolve().parent.parent

_report = report_at_end(TALLY)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    state = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(128, 2)).state_dict()
    torch.save(state, d / "zip.pth")
    torch.save(state, d / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "small.safetensors"))
    return {f.name: f.read_bytes() for f in d.iterdir()}


def attempt(path: Path, case: str, expect_error: bool = False) -> str:
    """Read ``path``; return the error message ('' when it loaded).  Asserts the contract."""
    try:
        state = read_state_dict(path)
    except WeightsError as e:
        msg = str(e)
        assert path.name in msg and str(path.parent) not in msg and "\n" not in msg, msg
        TALLY.add(case, f"WeightsError: {msg}", path.name)
        return msg
    assert not expect_error, f"{case}: {path.name} loaded"
    assert state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    TALLY.add(case, "loads cleanly")
    return ""


def put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_random_bytes_under_every_weights_suffix(tmp_path):
    for suffix in (".pth", ".pt", ".bin", ".safetensors"):
        for seed in (1, 2):
            for label, blob in random_blobs(seed):
                msg = attempt(put(tmp_path / f"{label}-{seed}{suffix}", blob), "random bytes", expect_error=True)
                if not blob:
                    assert "is empty (0 bytes)" in msg


def test_other_kinds_of_file_under_weights_names(tmp_path, sources, ants_bees):
    photo = sorted((ants_bees / "train" / "ants").iterdir())[0].read_bytes()
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as z:
        z.writestr("ants/a.jpg", photo)
    others = {**FOREIGN, "jpeg": photo, "zip-of-photos": (tmp_path / "photos.zip").read_bytes(),
              "gzipped-checkpoint": gzip.compress(sources["zip.pth"])}
    for kind, blob in others.items():
        for suffix in (".pth", ".pt", ".safetensors"):
            msg = attempt(put(tmp_path / f"{kind}{suffix}", blob), "another kind of file", expect_error=True)
            if kind in ("html", "pdf", "lfs-pointer", "text") and suffix != ".safetensors":
                assert "it is a" in msg  # named for what it is: "it is an HTML page", "a Git LFS pointer"...


def test_cut_short_at_many_offsets(tmp_path, sources):
    for seed, (name, blob) in enumerate(sorted(sources.items())):
        for cut in cut_offsets(len(blob), 40, seed):
            attempt(put(tmp_path / f"cut{cut}-{name}", blob[:cut]), f"truncated {Path(name).suffix}", expect_error=True)


def _record_spans(blob: bytes) -> list[tuple[int, int]]:
    """Where each record's bytes lie in a zip-format checkpoint."""
    import io
    spans = []
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        for info in z.infolist():
            o = info.header_offset
            start = o + 30 + int.from_bytes(blob[o + 26:o + 28], "little") + int.from_bytes(blob[o + 28:o + 30], "little")
            if info.compress_size:
                spans.append((start, start + info.compress_size))
    return spans


def test_flipped_bytes_in_headers_and_in_tensor_data(tmp_path, sources):
    spans = _record_spans(sources["zip.pth"])
    for seed in range(30):
        lo, hi = spans[seed % len(spans)]
        path = put(tmp_path / f"flip{seed}-zip.pth", flipped(sources["zip.pth"], seed, lo, hi))
        assert "fails its CRC-32 check" in attempt(path, "flip in a .pth zip record", expect_error=True)
    header_len = 8 + int.from_bytes(sources["small.safetensors"][:8], "little")
    size = {name: len(blob) for name, blob in sources.items()}
    regions = {"zip.pth": [("first local header", 0, 120), ("central directory", size["zip.pth"] - 300, size["zip.pth"])],
               "legacy.pth": [("pickle", 0, 400), ("storage bytes", 400, size["legacy.pth"])],
               "small.safetensors": [("JSON header", 0, header_len), ("tensor bytes", header_len, size["small.safetensors"])]}
    for name, parts in regions.items():
        for label, lo, hi in parts:
            for seed in range(20):
                attempt(put(tmp_path / f"{seed}-{name}", flipped(sources[name], seed, lo, hi)), f"flip in {name}: {label}")


def _poison(blob: bytes, at: int) -> bytes:
    """Set the exponent of the float32 at ``at`` to all ones: what one flipped byte can do."""
    b = bytearray(blob)
    b[at + 3] |= 0x7F
    b[at + 2] |= 0x80
    return bytes(b)


def test_nan_or_inf_from_a_flipped_exponent_is_refused_naming_the_tensor(tmp_path, sources, mobilenet_file):
    blob = sources["small.safetensors"]
    n = int.from_bytes(blob[:8], "little")
    begin = json.loads(blob[8:8 + n])["4.weight"]["data_offsets"][0]
    msg = attempt(put(tmp_path / "nan.safetensors", _poison(blob, 8 + n + begin + 4 * 5)), "exponent flipped", True)
    assert msg == "refused nan.safetensors: tensor '4.weight' holds NaN or infinite values " \
                  "(a damaged file, or saved from a training run that diverged)"
    # The real MobileNetV2 file is in the old format, with no CRC: under a name without its
    # hash (which would be checked first: test_weights_hash.py) only this check is left.
    real = mobilenet_file.read_bytes()
    first = torch.load(mobilenet_file, weights_only=True)["features.3.conv.0.0.weight"].flatten()[:8].numpy().tobytes()
    at = real.find(first)
    assert at > 0
    msg = attempt(put(tmp_path / "mobilenet_v2.pth", _poison(real, at)), "exponent flipped", True)
    assert "tensor 'features.3.conv.0.0.weight' holds NaN or infinite values" in msg


def test_the_real_mobilenet_file_cut_short(tmp_path, mobilenet_file):
    real = mobilenet_file.read_bytes()
    for cut in (1, 5, 1000, 65536, len(real) // 3, len(real) - 10):
        attempt(put(tmp_path / f"mobilenet-cut{cut}.pth", real[:cut]), "truncated real MobileNetV2", expect_error=True)


def _safetensors(header, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
HEADERS = {
    "length past the end": (_safetensors({"w": F32}, b"\0" * 8, length=10_000), "only"),
    "absurd length": (_safetensors({"w": F32}, b"\0" * 8, length=2**63), "over the format's limit"),
    "not JSON": (_safetensors(b"{not json", b""), "not valid JSON"),
    "not UTF-8": (_safetensors(b'{"\xff": 1}', b""), "not valid JSON"),
    "a JSON list": (_safetensors([1, 2], b""), "not a JSON object"),
    "nested 100k deep": (_safetensors(b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),
    "unknown dtype": (_safetensors({"w": {**F32, "dtype": "F128"}}, b"\0" * 8), "unknown dtype 'F128'"),
    "negative shape": (_safetensors({"w": {**F32, "shape": [-2]}}, b"\0" * 8), "malformed shape"),
    "boolean in shape": (_safetensors({"w": {**F32, "shape": [True, 2]}}, b"\0" * 8), "malformed shape"),
    "offsets past the data": (_safetensors({"w": {**F32, "data_offsets": [0, 8]}}, b"\0" * 4), "lies outside the data"),
    "offsets reversed": (_safetensors({"w": {**F32, "data_offsets": [8, 0]}}, b"\0" * 8), "lies outside the data"),
    "shape disagrees with span": (_safetensors({"w": {**F32, "shape": [2**40]}}, b"\0" * 8), "needs"),
    "overlapping tensors": (_safetensors({"a": F32, "b": {**F32, "data_offsets": [4, 12]}}, b"\0" * 12), "overlap"),
    "metadata not strings": (_safetensors({"__metadata__": {"a": 1}, "w": F32}, b"\0" * 8), "__metadata__"),
    "entry not an object": (_safetensors({"w": 3}, b""), "no dtype, shape and offsets"),
    "only 5 bytes": (b"\x10\0\0\0\0", "fewer than the 8"),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_safetensors_header_is_checked_against_the_file(tmp_path, case):
    blob, expected = HEADERS[case]
    assert expected in attempt(put(tmp_path / "w.safetensors", blob), "crafted safetensors header", True)


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_code_in_a_zip_format_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EVIL_MARKER", str(tmp_path / "pwned"))
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": Evil()}, tmp_path / "evil.pth")
    msg = attempt(tmp_path / "evil.pth", "pickle carrying code", expect_error=True)
    assert msg.startswith("refused evil.pth: it needs code to load (posix.system)")
    assert not (tmp_path / "pwned").exists()


def test_a_renamed_safetensors_file_is_read_as_what_it_is(tmp_path, sources):
    assert attempt(put(tmp_path / "renamed.pth", sources["small.safetensors"]), "safetensors named .pth") == ""
    attempt(put(tmp_path / "renamed.safetensors", sources["zip.pth"]), "torch zip named .safetensors", True)


def test_cli_inspect_exits_2_with_one_line(tmp_path, sources, capsys):
    chosen = {"five-bytes.pth": b"hello", "empty.pth": b"", "cut.pth": sources["legacy.pth"][:1000],
              "flip.pth": flipped(sources["zip.pth"], 0, *_record_spans(sources["zip.pth"])[-1]),
              "page.pth": FOREIGN["html"], "cut.safetensors": sources["small.safetensors"][:100],
              "nan.safetensors": _poison(sources["small.safetensors"], len(sources["small.safetensors"]) - 4),
              "random.pt": next(random_blobs(9, [4096]))[1]}
    for name, blob in chosen.items():
        rc = cli_main(["inspect", "--arch", "mobilenet_v2", "--weights", str(put(tmp_path / name, blob))])
        out, err = capsys.readouterr()
        assert rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and name in err, (name, err)
        TALLY.add("CLI inspect --weights (in-process)", f"exit {rc}, one line", name)
    env = {**os.environ, "TRANSFERLAB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "core", "inspect", "--arch", "mobilenet_v2", "--weights",
                        str(tmp_path / "five-bytes.pth")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith("error: five-bytes.pth is not a readable PyTorch weights file: it is a text file")
    TALLY.add("CLI inspect --weights (subprocess)", f"exit {p.returncode}, one line")
