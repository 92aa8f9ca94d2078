"""cpc_speech.audio: reading real files (WAV, FLAC, OGG, MP3), down-mix, resampling, segments,
integer scaling and the errors, which must name the file."""

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from cpc_speech.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioInfo,
    audio_info,
    load_waveform,
    read_audio,
    resample,
    resampled_length,
    to_mono,
    validate,
    write_audio,
)


def sine(freq, seconds, rate, amp=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wav, rate=SAMPLE_RATE):
    spec = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return np.argmax(spec) * rate / len(wav)


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "ext, fmt, subtype, lossy",
    [
        ("wav", "WAV", "PCM_16", False),
        ("flac", "FLAC", "PCM_16", False),
        ("ogg", "OGG", "VORBIS", True),
        ("mp3", "MP3", "MPEG_LAYER_III", True),
    ],
)
def test_read_formats(tmp_path, ext, fmt, subtype, lossy):
    x = sine(440, 0.5, SAMPLE_RATE)
    path = tmp_path / f"tone.{ext}"
    sf.write(str(path), x, SAMPLE_RATE, format=fmt, subtype=subtype)
    info = audio_info(path)
    assert info == AudioInfo(frames=len(x), sample_rate=SAMPLE_RATE, channels=1)
    wav = read_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == len(x) == info.num_samples_16k
    assert abs(peak_hz(wav) - 440) < 5
    if not lossy:
        np.testing.assert_allclose(wav, x, atol=1e-4)
    assert np.max(np.abs(wav)) <= 1.0


def test_read_opus_at_48k(tmp_path):
    x = sine(1000, 0.4, 48000)
    path = tmp_path / "tone.opus"
    write_audio(path, x, 48000, subtype="OPUS")
    wav = read_audio(path)
    assert len(wav) == resampled_length(audio_info(path).frames, 48000)
    assert abs(peak_hz(wav) - 1000) < 10


def test_write_audio_leaves_no_temporary(tmp_path):
    write_audio(tmp_path / "a" / "x.flac", sine(300, 0.1, SAMPLE_RATE))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.flac"]
    assert audio_info(tmp_path / "a" / "x.flac").sample_rate == SAMPLE_RATE


# ---------------------------------------------------------------- channels


def test_stereo_file_is_downmixed(tmp_path):
    left, right = sine(440, 0.25, SAMPLE_RATE), sine(440, 0.25, SAMPLE_RATE, amp=0.1)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    assert audio_info(path).channels == 2
    np.testing.assert_allclose(read_audio(path), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_load_waveform_stereo_layouts(layout):
    a, b = sine(300, 0.2, SAMPLE_RATE), sine(500, 0.2, SAMPLE_RATE)
    stereo = np.stack([a, b]) if layout == "channels_first" else np.stack([a, b], axis=1)
    out = load_waveform(stereo, SAMPLE_RATE)
    assert out.shape == (len(a),)
    np.testing.assert_allclose(out, (a + b) / 2, atol=1e-6)
    np.testing.assert_allclose(load_waveform(torch.from_numpy(stereo), SAMPLE_RATE), out, atol=1e-6)


def test_to_mono_rejects_3d():
    with pytest.raises(AudioError, match="clip: expected 1-D or 2-D"):
        to_mono(np.zeros((2, 2, 10)), name="clip")


# ---------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_file_resampled_to_16k(tmp_path, rate):
    x = sine(1000, 0.37, rate)  # odd length at most rates
    path = tmp_path / f"tone_{rate}.flac"
    sf.write(str(path), x, rate)
    info = audio_info(path)
    assert (info.frames, info.sample_rate) == (len(x), rate)
    wav = read_audio(path)
    assert len(wav) == resampled_length(len(x), rate) == info.num_samples_16k
    assert abs(peak_hz(wav) - 1000) < 5
    # the same through the array path
    arr = load_waveform(x, rate)
    assert len(arr) == len(wav)
    np.testing.assert_allclose(arr, wav, atol=2e-4)  # FLAC is 16-bit


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 24000, 32000, 44100, 48000, 96000])
def test_resampled_length_matches_soxr(rate):
    for n in (1, 3, 441, 1001, 12345, 48001):
        assert len(resample(np.zeros(n, np.float32), rate)) == resampled_length(n, rate), (rate, n)
        assert len(soxr.resample(np.zeros(n, np.float32), rate, SAMPLE_RATE, quality="HQ")) == resampled_length(n, rate)


def test_resample_identity_and_bad_rate():
    x = sine(200, 0.1, SAMPLE_RATE)
    assert resample(x, SAMPLE_RATE) is not None and np.array_equal(resample(x, SAMPLE_RATE), x)
    assert resampled_length(123, SAMPLE_RATE) == 123
    with pytest.raises(AudioError, match="invalid sample rate"):
        resample(x, 0)


# ---------------------------------------------------------------- segments


@pytest.mark.parametrize("rate, ext", [(16000, "wav"), (16000, "flac"), (44100, "flac")])
def test_segment_equals_slice_of_full_read(tmp_path, rate, ext):
    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal(int(rate * 0.5))).astype(np.float32)
    path = tmp_path / f"noise.{ext}"
    sf.write(str(path), x, rate)
    full = read_audio(path)
    for start, stop in [(0, 100), (1234, 5678), (4000, None), (7000, len(full) + 500)]:
        seg = read_audio(path, start=start, stop=stop)
        np.testing.assert_array_equal(seg, full[start:stop])


def test_segment_past_end_is_empty_error(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(str(path), sine(100, 0.1, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(AudioError, match="short.wav: the segment from sample 10000 .16 kHz. starts after the end of the audio"):
        read_audio(path, start=10_000)


# ---------------------------------------------------------------- integer inputs


def test_integer_arrays_are_scaled():
    pcm16 = np.array([0, 16384, -16384, 32767, -32768], dtype=np.int16)
    out = load_waveform(pcm16, SAMPLE_RATE)
    np.testing.assert_allclose(out, pcm16 / 32768.0, atol=1e-7)
    assert out.min() >= -1.0 and out.max() <= 1.0
    pcm32 = np.array([0, 2**30, -(2**31)], dtype=np.int32)
    np.testing.assert_allclose(load_waveform(pcm32, SAMPLE_RATE), [0.0, 0.5, -1.0], atol=1e-7)
    pcm8 = np.array([128, 192, 0, 255], dtype=np.uint8)  # 8-bit PCM is offset binary
    np.testing.assert_allclose(load_waveform(pcm8, SAMPLE_RATE), [0.0, 0.5, -1.0, 127 / 128], atol=1e-7)


def test_integer_tensor_scaled_like_array():
    pcm16 = np.array([0, 8192, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(load_waveform(torch.from_numpy(pcm16), SAMPLE_RATE), load_waveform(pcm16, SAMPLE_RATE))


def test_int16_array_matches_file_read(tmp_path):
    pcm = (sine(440, 0.1, SAMPLE_RATE) * 32767).astype(np.int16)
    path = tmp_path / "pcm.wav"
    sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16")
    np.testing.assert_allclose(load_waveform(pcm, SAMPLE_RATE), read_audio(path), atol=1e-7)


def test_load_waveform_argument_errors(tmp_path):
    with pytest.raises(AudioError, match="needs sample_rate"):
        load_waveform(np.zeros(100, np.float32))
    path = tmp_path / "a.wav"
    sf.write(str(path), sine(100, 0.1, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(AudioError, match="do not pass it with a path"):
        load_waveform(path, 16000)
    assert len(load_waveform(str(path))) == 1600
    with pytest.raises(AudioError, match="unsupported dtype"):
        load_waveform(np.array(["a", "b"]), SAMPLE_RATE)


# ---------------------------------------------------------------- errors name the file


def test_missing_file(tmp_path):
    path = tmp_path / "nope.flac"
    with pytest.raises(AudioError, match="nope.flac: file not found"):
        read_audio(path)
    with pytest.raises(AudioError, match="nope.flac: file not found"):
        audio_info(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.flac"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match="corrupt.flac: cannot decode audio"):
        read_audio(path)
    with pytest.raises(AudioError, match="corrupt.flac: cannot read audio header"):
        audio_info(path)


def test_empty_file(tmp_path):
    for rate in (SAMPLE_RATE, 8000):
        path = tmp_path / f"empty{rate}.wav"
        sf.write(str(path), np.zeros(0, np.float32), rate)
        assert audio_info(path).frames == 0
        with pytest.raises(AudioError, match=f"empty{rate}.wav: audio is empty"):
            read_audio(path)
    with pytest.raises(AudioError, match="audio is empty"):
        load_waveform(np.zeros(0, np.float32), 8000)


def test_nan_samples(tmp_path):
    x = sine(440, 0.1, SAMPLE_RATE)
    x[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: audio contains NaN"):
        read_audio(path)
    with pytest.raises(AudioError, match="arr: audio contains NaN"):
        load_waveform(x, SAMPLE_RATE, name="arr")
    x[10] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        validate(x, "v")


def test_too_short(tmp_path):
    path = tmp_path / "tiny.wav"
    sf.write(str(path), sine(440, 0.01, SAMPLE_RATE), SAMPLE_RATE)  # 160 samples
    assert len(read_audio(path, min_samples=160)) == 160
    with pytest.raises(AudioError, match=r"tiny.wav: audio is too short: 160 samples .* at least 400"):
        read_audio(path, min_samples=400)
    with pytest.raises(AudioError, match="too short"):
        load_waveform(sine(440, 0.01, 8000), 8000, min_samples=400)  # 80 samples -> 160 at 16 kHz
