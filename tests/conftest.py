"""Shared test settings: deterministic, few threads (CI has 2 cores)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("CPC_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny matrix products: extra intra-op threads only add
    synchronisation, and are very slow when the cores are shared); restore the setting afterwards.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_tone_corpus(root, speakers=4, utterances=4, seconds=1.5, seed=0):
    """A small FLAC corpus in a speaker/utterance layout with a manifest: harmonic tones whose
    pitch drifts; each speaker has its own pitch range and timbre."""
    import numpy as np

    from cpc_speech.audio import write_audio
    from cpc_speech.corpora.manifest import utterance_from_file, write_manifest

    rng = np.random.default_rng(seed)
    rows = []
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    for s in range(speakers):
        for u in range(utterances):
            f0 = (120 + 60 * s) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6.3)))
            phase = 2 * np.pi * np.cumsum(f0) / 16000
            wav = sum((0.4 / h) * np.sin(h * phase) * (1 + 0.5 * ((s + h) % 3)) for h in range(1, 4))
            wav = 0.3 * wav / np.abs(wav).max() + 0.005 * rng.standard_normal(n)
            path = root / f"spk{s}" / f"spk{s}-{u:03d}.flac"
            write_audio(path, wav.astype(np.float32))
            rows.append(utterance_from_file(f"spk{s}-{u:03d}", path, f"spk{s}"))
    return write_manifest(rows, root / "manifest.tsv")


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    """Manifest path of a 4-speaker x 4-utterance tone corpus (1.5 s each)."""
    return write_tone_corpus(tmp_path_factory.mktemp("tones"))
