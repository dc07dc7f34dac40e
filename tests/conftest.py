import gzip
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: a second intra-op thread only adds synchronisation, which on a loaded
    2-core machine costs more than the work (a 6-step rknet forward/backward: 14 ms on one thread,
    1.9 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def _write_idx_file(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_mnist_files(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for stem, n in zip(IDX_STEMS, (n_train, n_train, n_test, n_test)):
        if "images" in stem:
            arrays[stem] = rng.integers(0, 256, size=(n, 6, 6), dtype=np.uint8)
            arrays[stem][:, 0, 0] = np.arange(n)  # a sample id in the first pixel
        else:
            arrays[stem] = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx_file(folder / (stem + (".gz" if gz else "")), arrays[stem])
    return arrays


@pytest.fixture
def write_idx():
    """write_idx(path, array): an IDX file (gzipped when the name ends in .gz)."""
    return _write_idx_file


@pytest.fixture
def fake_mnist():
    """fake_mnist(folder, gz, n_train=12, n_test=5) -> arrays: the four MNIST IDX files of random 6x6
    images whose first pixel is the sample id."""
    return _fake_mnist_files



@pytest.fixture(scope="session")
def train_claim_runs(tmp_path_factory):
    """train_claim_runs(specs): train a claim's RunSpecs into fresh directories, as the report's cache does
    (config.json first, which load_run reads back; the specs' recorders after every epoch); returns
    RunSpec.key() -> run directory."""
    from dataclasses import asdict

    from dia_ode.engine import run_training
    from dia_ode.rundir import write_json
    from dia_ode.studies.report.recorders import epoch_callback

    def train(specs) -> dict:
        run_dirs = {}
        for spec in specs:
            run_dir = tmp_path_factory.mktemp(f"{spec.config.model}-seed{spec.config.seed}")
            write_json(run_dir / "config.json", asdict(spec.config))
            run_training(spec.config, run_dir, progress=False, on_epoch_end=epoch_callback(spec.recorders, run_dir))
            run_dirs[spec.key()] = run_dir
        return run_dirs

    return train


@pytest.fixture
def epochs_trained(monkeypatch):
    """How many epochs the trainer ran in this process (wraps Trainer._train_epoch)."""
    from dia_ode.engine import Trainer

    count = []
    original = Trainer._train_epoch

    def counted(self, net, epoch):
        count.append((self.cfg.seed, epoch))
        return original(self, net, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", counted)
    return count
