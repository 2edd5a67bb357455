"""Shared fixtures: the real ants/bees photos and MobileNetV2 weights from ../shared, real
Fashion-MNIST photos from a Debian package, and small synthetic datasets written as real
image files."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRANSFERLAB_OFFLINE", "1")  # never wait on a network in tests
# As the server does (app.py): the suite runs servers, torchrun ranks and Chromium beside
# each other on 2 cores, where spinning OpenMP threads steal the cores from each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The micro-batch is measured once per machine; tests isolate their data folders, so they
# share one measurement here instead of paying for it per test.
os.environ.setdefault("TRANSFERLAB_SPEED", str(Path(__import__("tempfile").gettempdir()) / "transferlab-test-speed"))

from core import paths  # noqa: E402

SHARED = paths.shared_dir()
ANTS_BEES = paths.demo_dataset()
MOBILENET_FILE = SHARED / "torch_home/hub/checkpoints/mobilenet_v2-b0353104.pth" if SHARED else None


@pytest.fixture
def ants_bees() -> Path:
    if ANTS_BEES is None:
        pytest.skip("../shared/datasets/hymenoptera_data is absent (the real photos live there)")
    return ANTS_BEES


@pytest.fixture
def mobilenet_file() -> Path:
    if MOBILENET_FILE is None or not MOBILENET_FILE.is_file():
        pytest.skip("../shared/torch_home/hub/checkpoints/mobilenet_v2-b0353104.pth is absent")
    return MOBILENET_FILE


def write_image(path: Path, color, size=(64, 48), fmt="JPEG", mode="RGB") -> Path:
    from PIL import Image, ImageDraw
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    ImageDraw.Draw(img).rectangle([size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2], fill=(255 - color[0], 255 - color[1], 255 - color[2]))
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, fmt)
    return path


@pytest.fixture(scope="session")
def fashion_folder(tmp_path_factory) -> Path:
    """Real non-ants/bees photos: 5 Fashion-MNIST classes, 40 train / 20 val each, built
    once per session from Debian's dataset-fashion-mnist (see tests/fashion_mnist.py)."""
    from tests.fashion_mnist import build_fashion_folder, fashion_mnist_files
    if fashion_mnist_files() is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist")
    return build_fashion_folder(tmp_path_factory.mktemp("fashion"))


@pytest.fixture(scope="session")
def audited(tmp_path_factory, fashion_folder):
    """The noisy ants/bees audited once for the whole session (tests/test_audit.py)."""
    from tests.test_audit import build_audited
    return build_audited(tmp_path_factory, fashion_folder)


@pytest.fixture
def tiny_folders(tmp_path) -> Path:
    """Two visually distinct classes, 10 images each, in the one-folder layout."""
    root = tmp_path / "tiny"
    for i in range(10):
        write_image(root / "red" / f"r{i}.jpg", (200 + i, 20, 30))
        write_image(root / "blue" / f"b{i}.jpg", (20, 30, 200 + i))
    return root


@pytest.fixture
def tiny_split(tmp_path) -> Path:
    root = tmp_path / "tinysplit"
    for split, n in (("train", 8), ("val", 4)):
        for i in range(n):
            write_image(root / split / "red" / f"r{i}.jpg", (200 + i, 20, 30))
            write_image(root / split / "blue" / f"b{i}.png", (20, 30, 200 + i), fmt="PNG")
    return root


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Runs and extracted uploads go to a temporary folder, not the checkout; the datasets
    tests write there are the server folders the dashboard offers (its data/ and runs/
    inside are refused all the same)."""
    monkeypatch.setattr(paths, "DEFAULT_RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(paths, "DEFAULT_DATA_DIR", tmp_path / "data")
    monkeypatch.setenv("TRANSFERLAB_DATASET_ROOTS", str(tmp_path))
    return tmp_path


# The workspace key of the visitor an AppTest plays (a 22-character key, as the app makes),
# and its owner id: runs a test makes with ``make_run`` are that visitor's.
VISITOR = "Test-visitor-A-0000000"
OTHER_VISITOR = "Test-visitor-B-0000000"


def owner_of_key(key: str) -> str:
    from core.access import owner_id
    return owner_id(key)


@pytest.fixture
def app(isolated_dirs):
    """An AppTest of the dashboard; ``app(page)`` opens that page as ``VISITOR`` (another
    workspace: ``state={S.SESSION: OTHER_VISITOR}``)."""
    from streamlit.testing.v1 import AppTest

    def open_page(page: str | None = None, state: dict | None = None):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
        at.session_state["session_id"] = VISITOR
        for k, v in (state or {}).items():
            at.session_state[k] = v
        if page:
            at.switch_page(page)
        return at.run()
    return open_page


def make_run(data, runs_dir, name="r1", arch="mobilenet_v3_small", weights="none", freeze="none", epochs=1,
             owner: str | None = "visitor"):
    """A run as ``VISITOR`` trained it (``owner=None``: the operator's, as from the CLI)."""
    from core.training.experiment import ExperimentConfig, run_experiment
    from core.training.trainer import TrainConfig
    cfg = ExperimentConfig(data=str(data), arch=arch, weights=weights, freeze=freeze, name=name,
                           train=TrainConfig(epochs=epochs, batch_size=8),
                           owner=owner_of_key(VISITOR) if owner == "visitor" else owner)
    run_dir, _, _ = run_experiment(cfg, runs_dir=runs_dir)
    return run_dir


def wait_for_jobs(sid: str, timeout: float = 300) -> None:
    """Wait until the jobs of the workspace ``sid`` (a tab's ``S.SESSION``) ended."""
    import time
    from core.access import owner_id
    from ui.jobs import training_queue
    owner = owner_id(sid)
    end = time.time() + timeout
    while any(j.active for j in training_queue().of(owner)):
        if time.time() > end:
            raise TimeoutError("training job still running")
        time.sleep(0.2)


def pytest_configure(config):
    # Labels, not skips: CI runs everything; `-m "not slow"` gives a quick local loop.
    config.addinivalue_line("markers", "slow: a browser or multi-process test (runs in CI; deselect with -m 'not slow')")
    # CI's log names the slowest tests, so the suite's time (kept under ~20 minutes on 2
    # cores) can be watched from one run to the next without a second run.
    if not config.option.durations:
        config.option.durations = 25
