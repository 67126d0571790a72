"""
Reading audio the way every script here needs it: 16 kHz mono float32, whatever the file's rate and channels.
One small module so prepare, train, sample and eval agree on what a clip is. Needs no ffmpeg (soundfile reads
wav, flac, ogg and mp3).
"""
import io
import math
import os

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000  # Whisper's rate
MAX_SECONDS = 30.0  # Whisper's window: training and eval clips longer than this are refused, not silently cut


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file and the problem, reason is a short code for reports
    (missing, empty, unreadable, too_long, non_finite)."""

    def __init__(self, path, reason, detail):
        super().__init__(f"{path}: {detail}")
        self.reason = reason


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE, zero_crossings: int = 16) -> np.ndarray:
    """Band-limited resampling with a Hann-windowed sinc kernel (no aliasing, unlike linear interpolation)."""
    if sr_in == sr_out:
        return x.astype(np.float32)
    cutoff = min(1.0, sr_out / sr_in)  # low-pass at the lower of the two Nyquist frequencies, relative to sr_in's
    half_width = math.ceil(zero_crossings / cutoff)  # kernel half-width in input samples
    n_out = int(math.ceil(len(x) * sr_out / sr_in))
    out = np.empty(n_out, dtype=np.float32)
    padded = np.concatenate([np.zeros(half_width, np.float32), x.astype(np.float32), np.zeros(half_width + 1, np.float32)])
    taps = np.arange(-half_width + 1, half_width + 1)
    for start in range(0, n_out, 16384):  # in chunks, so a 30-s clip needs tens of MB, not hundreds
        t = np.arange(start, min(start + 16384, n_out)) * (sr_in / sr_out)  # output times in input samples
        base = np.floor(t).astype(np.int64)
        idx = base[:, None] + taps[None, :]  # (n, 2 * half_width) input samples around each output time
        dist = idx - t[:, None]
        kernel = cutoff * np.sinc(cutoff * dist) * (0.5 + 0.5 * np.cos(np.pi * dist / half_width))
        out[start : start + len(t)] = (padded[idx + half_width] * kernel).sum(axis=1)
    return out


def probe_audio(path, max_seconds: float = MAX_SECONDS) -> int:
    """A clip's length in 16 kHz samples from its header alone; raises AudioError for a missing, empty, unreadable
    or too long file (checked before reading a possibly huge file)."""
    if not os.path.isfile(path):
        raise AudioError(path, "missing", "no such file")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty", "empty file")
    return probe_header(str(path), path, max_seconds)


def probe_header(source, name, max_seconds: float) -> int:
    """probe_audio for a path or an open binary file (an upload), named `name` in errors."""
    try:
        info = sf.info(source)
    except Exception as e:  # soundfile raises several types for corrupt or unknown formats
        raise AudioError(name, "unreadable", f"cannot read audio ({e})") from None
    if info.frames <= 0:
        raise AudioError(name, "empty", "no samples")
    if info.duration > max_seconds:
        raise AudioError(name, "too_long", f"{info.duration:.1f} s is longer than the limit of {max_seconds:g} s")
    return math.ceil(info.frames * SAMPLE_RATE / info.samplerate)


def load_audio(path, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """A file as 16 kHz mono float32 in [-1, 1]; raises AudioError naming the file for anything unusable."""
    probe_audio(path, max_seconds)
    return read_samples(str(path), path)


def decode_audio(data: bytes, name: str, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """load_audio for the bytes of a wav, flac, ogg or mp3 file held in memory (an upload), named `name` in errors."""
    if not data:
        raise AudioError(name, "empty", "empty file")
    probe_header(io.BytesIO(data), name, max_seconds)
    return read_samples(io.BytesIO(data), name)


def read_samples(source, name) -> np.ndarray:
    try:
        x, sr = sf.read(source, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(name, "unreadable", f"cannot read audio ({e})") from None
    if x.size == 0:
        raise AudioError(name, "empty", "no samples")
    x = x.mean(axis=1)  # downmix
    if not np.isfinite(x).all():
        raise AudioError(name, "non_finite", "audio holds NaN or infinite samples")
    return np.clip(resample(x, sr), -1.0, 1.0)


NO_SPEECH = "The clip holds no speech."  # sample.py's and serve.py's answer about a clip holds_speech rejects


def holds_speech(x: np.ndarray, min_dbfs: float = -60.0, min_range_db: float = 6.0) -> bool:
    """Whether a clip may hold speech, by its energy: its loudest 20-ms frame above min_dbfs, and its loud frames
    (95th percentile) min_range_db above its quiet ones (10th), as speech's syllables and pauses make and silence,
    hum or steady noise do not. Every clip of the demo's corpus, at 5 dB SNR too, spans 8.8 dB or more."""
    n = SAMPLE_RATE // 50
    frames = x[: len(x) // n * n].astype(np.float64).reshape(-1, n)
    if len(frames) == 0:
        return False
    db = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)
    return bool(db.max() > min_dbfs and np.percentile(db, 95) - np.percentile(db, 10) >= min_range_db)
