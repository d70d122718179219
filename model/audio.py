"""Audio as spectrogram "images" for a CLIP image-architecture encoder (paper §3.1.3).

16 kHz waveform -> 2-s segments -> 224 log-mel bins, 64 ms window, 32 ms hop -> 224x224x3 per segment.
The STFT is a strided convolution with a fixed DFT basis so that the whole front-end exports to plain
ONNX ops: training and the ONNX runtime see the same features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    segment_s: float = 2.0
    n_fft: int = 1024  # 64 ms at 16 kHz
    hop_length: int = 512  # 32 ms at 16 kHz
    n_mels: int = 224
    image_size: int = 224
    # Fixed dB normalisation (speech at full scale sits around -100..+20 dB); recorded in the bundle.
    db_mean: float = -50.0
    db_std: float = 25.0
    amin: float = 1e-10

    @property
    def segment_samples(self) -> int:
        return int(round(self.sample_rate * self.segment_s))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_step = math.log(6.4) / 27.0
    above = hz >= 1000.0
    mel[above] = 15.0 + np.log(hz[above] / 1000.0) / log_step
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * (200.0 / 3)
    log_step = math.log(6.4) / 27.0
    above = mel >= 15.0
    hz[above] = 1000.0 * np.exp(log_step * (mel[above] - 15.0))
    return hz


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular, area-normalised (Slaney) mel filters, shape (n_mels, n_fft // 2 + 1)."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sample_rate / 2.0]))[0], n_mels + 2)
    )
    widths = np.diff(edges)
    rising = (fft_hz[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMelImage(nn.Module):
    """(B, N) float waveform at 16 kHz -> (B, S, 3, 224, 224) normalised log-mel images, S = ceil(N / 2 s)."""

    def __init__(self, cfg: MelConfig = MelConfig()):
        super().__init__()
        self.cfg = cfg
        n = torch.arange(cfg.n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / cfg.n_fft)  # periodic Hann
        k = torch.arange(cfg.n_fft // 2 + 1, dtype=torch.float64)[:, None]
        phase = 2 * math.pi * k * n[None, :] / cfg.n_fft
        basis = torch.cat([torch.cos(phase) * window, -torch.sin(phase) * window])[:, None, :]
        self.register_buffer("dft_basis", basis.float(), persistent=False)
        fb = torch.from_numpy(mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels))
        self.register_buffer("mel_fb", fb, persistent=False)

    def segments(self, num_samples: int) -> int:
        return max(1, math.ceil(num_samples / self.cfg.segment_samples))

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, n_mels, frames) power in dB, centred frames with zero padding."""
        pad = self.cfg.n_fft // 2
        x = F.pad(wave[:, None, :], (pad, pad))
        spec = F.conv1d(x, self.dft_basis, stride=self.cfg.hop_length)
        bins = self.cfg.n_fft // 2 + 1
        power = spec[:, :bins] ** 2 + spec[:, bins:] ** 2
        mel = torch.matmul(self.mel_fb, power)
        return 10.0 * torch.log10(torch.clamp(mel, min=self.cfg.amin))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        seg = self.cfg.segment_samples
        batch, num = wave.shape
        count = self.segments(num)
        wave = F.pad(wave, (0, count * seg - num)).reshape(batch * count, seg)
        db = self.log_mel(wave)
        size = self.cfg.image_size
        img = F.interpolate(db[:, None], size=(size, size), mode="bilinear", align_corners=False)
        img = (img - self.cfg.db_mean) / self.cfg.db_std
        return img.expand(-1, 3, -1, -1).reshape(batch, count, 3, size, size)
