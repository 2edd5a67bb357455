"""Weights whose name carries a SHA-256 prefix (torch hub's ``name-<hash>.pth``) are
checked against it on every load: from the hub cache, as a file, as an upload, by the CLI.

The real MobileNetV2 file is in the old non-zip format: it has no CRC, so 20 bytes
changed inside its tensors (kept finite) loaded without a word before this check.
"""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from core import paths
from core.errors import WeightsError
from core.models import file_hash
from core.models.checkpoint import read_state_dict
from core.models.zoo import build_model, local_weights, pretrained_available
from ui import state as S

ROOT = Path(__file__).resolve().parent.parent
HUB_NAME = "mobilenet_v2-b0353104.pth"


def damaged(data: bytes) -> bytes:
    """20 bytes in the middle of the file (deep in its tensor data) with their lowest bit
    flipped: small changes to weights that stay finite, so no other check sees them."""
    b = bytearray(data)
    mid = len(b) // 2
    for i in range(mid, mid + 20):
        b[i] ^= 0x01
    return bytes(b)


@pytest.fixture(scope="module")
def real_bytes():
    from tests.conftest import MOBILENET_FILE
    if MOBILENET_FILE is None or not MOBILENET_FILE.is_file():
        pytest.skip(f"../shared/torch_home/hub/checkpoints/{HUB_NAME} is absent")
    return MOBILENET_FILE.read_bytes()


@pytest.fixture
def damaged_copy(tmp_path, real_bytes) -> Path:
    f = tmp_path / "copies" / HUB_NAME
    f.parent.mkdir()
    f.write_bytes(damaged(real_bytes))
    return f


@pytest.fixture
def hashes(monkeypatch) -> list:
    """Every SHA-256 computed by the check, by file name (a fresh cache per test)."""
    calls, real = [], file_hash.sha256_of
    file_hash.forget()
    monkeypatch.setattr(file_hash, "sha256_of", lambda p: calls.append(Path(p).name) or real(p))
    yield calls
    file_hash.forget()


def test_read_state_dict_refuses_a_damaged_hub_named_file(damaged_copy):
    with pytest.raises(WeightsError) as e:
        read_state_dict(damaged_copy)
    msg = str(e.value)
    assert msg.startswith(f"refused {HUB_NAME}: its content does not match the SHA-256 prefix b0353104 in its name")
    assert "changed or damaged since it was published" in msg and "copy or download it again" in msg
    assert str(damaged_copy.parent) not in msg and "\n" not in msg


def test_imagenet_from_a_damaged_hub_cache_is_refused_not_replaced(tmp_path, monkeypatch, real_bytes, hashes):
    # The torch hub cache holds a damaged copy; the shared folder behind it an intact one.
    # The damaged one is found first and must be refused, not skipped for the other.
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / HUB_NAME).write_bytes(damaged(real_bytes))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))  # what torch.hub.set_dir sets; restored after
    assert paths.hub_checkpoint_dirs()[0] == hub / "checkpoints"
    assert pretrained_available("mobilenet_v2") and local_weights("mobilenet_v2")[1].parent == hub / "checkpoints"
    assert hashes == []  # the picker's question is answered by name: nothing hashed
    with pytest.raises(WeightsError) as e:
        build_model("mobilenet_v2", 2, "imagenet")
    msg = str(e.value)
    assert msg.startswith(f"refused {HUB_NAME} in the torch hub cache ($TORCH_HOME/hub/checkpoints): "
                          "its content does not match the SHA-256 prefix b0353104")
    assert "delete it" in msg and "intact copy" in msg and str(tmp_path) not in msg


def test_an_intact_file_loads_and_is_hashed_once_until_it_changes(tmp_path, real_bytes, hashes):
    f = tmp_path / HUB_NAME
    f.write_bytes(real_bytes)
    first = read_state_dict(f)
    again = read_state_dict(f)
    assert hashes == [HUB_NAME]  # the second load trusted the remembered verdict
    assert torch.equal(first["features.0.0.weight"], again["features.0.0.weight"])
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: checked again
    read_state_dict(f)
    assert hashes == [HUB_NAME, HUB_NAME]
    f.write_bytes(damaged(real_bytes))  # replaced in place: same path, same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    with pytest.raises(WeightsError, match="does not match the SHA-256 prefix"):
        read_state_dict(f)


def test_jobs_starting_together_share_one_hash(tmp_path, real_bytes, monkeypatch, hashes):
    f = tmp_path / HUB_NAME
    f.write_bytes(real_bytes)
    counting = file_hash.sha256_of
    monkeypatch.setattr(file_hash, "sha256_of", lambda p: time.sleep(0.3) or counting(p))  # all arrive mid-hash
    errors = []

    def job():
        try:
            file_hash.check_name_hash(f)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=job) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and hashes == [HUB_NAME]


def test_only_names_carrying_a_hash_are_checked(tmp_path, real_bytes, hashes):
    # Documented limit: a damaged copy renamed without its hash cannot be checked.
    plain = tmp_path / "my_mobilenet.pth"
    plain.write_bytes(damaged(real_bytes))
    assert set(read_state_dict(plain)) == set(torch.load(plain, weights_only=True))
    assert hashes == []
    name = file_hash.name_hash_prefix
    assert name(HUB_NAME) == "b0353104" and name("mnasnet0.5_top1_67.823-3ffadce67e.pth") == "3ffadce67e"
    assert name("vgg13-19584684.pth") == "19584684"  # all decimal, but no date: a hash
    assert name("x-deadbeef.safetensors") == "deadbeef" and name("x-deadbeef.pth.tar") == "deadbeef"
    for plain_name in ("model-cafe.pth", "resnet-1.pth", "model-20240315.pth", "run-20240315093000.pt",
                       "x-deadbeef.pth.bak", "x-DEADBEEF.pth", "deadbeef.pth", "x-deadbeef.zip"):
        assert name(plain_name) is None, plain_name


def test_uploads_keep_their_name_and_are_checked_by_it(isolated_dirs, real_bytes):
    bad = paths.save_upload(damaged(real_bytes), "C:\\Users\\me\\Downloads\\" + HUB_NAME)
    assert bad.name == HUB_NAME
    with pytest.raises(WeightsError) as e:
        read_state_dict(bad)
    assert str(e.value).startswith(f"refused {HUB_NAME}: its content does not match")
    assert str(isolated_dirs) not in str(e.value)
    assert read_state_dict(paths.save_upload(real_bytes, HUB_NAME))  # the intact file, same name
    assert read_state_dict(paths.save_upload(real_bytes, "mnv2.pth"))  # an ordinary name, as before


def test_the_model_page_refuses_a_damaged_upload(app, mobilenet_file, real_bytes):
    at = app("pages/model.py")
    at.radio(key="_w.weights").set_value("file").run()
    at.file_uploader[0].set_value((HUB_NAME, damaged(real_bytes), "application/octet-stream")).run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith(f"refused {HUB_NAME}: its content does not match")
    assert at.session_state[S.WEIGHTS_FILE] is None  # refused files never become the selected weights


def test_cli_train_with_a_damaged_file_exits_2_with_one_line(tmp_path, damaged_copy, tiny_split):
    env = {**os.environ, "TRANSFERLAB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "core", "train", str(tiny_split), "--weights", str(damaged_copy),
                        "--epochs", "1", "--batch-size", "4", "--runs-dir", str(tmp_path / "runs")],
                       check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 2, p.stdout + p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: refused {HUB_NAME}: its content does not match"), p.stderr
    assert str(damaged_copy.parent) not in p.stderr
    assert not any((tmp_path / "runs").glob("*/config.json"))  # no run was saved
