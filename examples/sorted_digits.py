"""The sorted-sequence CPC toy, with spoken digits instead of MNIST images.

The classic demonstration (a CPC on sequences of digit images whose futures are sorted) in speech:
the ten English digit words are rendered with the bundled eSpeak NG in ``--voices`` voices (eSpeak
variants at random pitch and rate); a sequence is ``--length`` clips of 0.5 s spelling a sorted
run of digits (``3 4 5 6 7 8 9 0`` -- ascending, wrapping after 9), every clip in a random
training voice with a random gain, shift and noise. The same CPC model as the speech recipes
(:class:`cpc_speech.model.cpc.CPCModel`: a strided-conv encoder, here with a total stride of 8000
samples so that one clip is one frame, a GRU context and linear prediction heads) is trained with
the same InfoNCE loss (:class:`cpc_speech.loss.InfoNCELoss`) to pick the clip ``k`` = 1..``--steps``
positions ahead among ``--negatives`` random other clips of the sequence (other digits, other
voices: a sorted run of at most 10 never repeats a digit, so no negative shows the positive's
digit). Then the encoder is frozen and an MLP learns the digit of single clips of the training
voices; it is tested on voices never seen in training, next to the same MLP on a random-init
encoder::

    python examples/sorted_digits.py            # ~3 minutes on 2 CPU cores

It prints the contrastive accuracy per epoch (target >= 99 %) and the classifier's test accuracy
(target >= 90 %).
"""

import argparse
import time

import numpy as np
import torch

from cpc_speech.audio import SAMPLE_RATE, resample
from cpc_speech.config import ContextConfig, CPCConfig, EncoderConfig, PredictorConfig
from cpc_speech.loss import InfoNCELoss
from cpc_speech.model.cpc import CPCModel
from cpc_speech.synth.espeak import FEMALE_VARIANTS, MALE_VARIANTS, Voice, synthesize

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLIP = 8000  # samples per digit clip (0.5 s at 16 kHz) = the encoder's total stride


def render_digits(voices: int, seed: int) -> np.ndarray:
    """(voices, 10, CLIP) float32: every digit word in every voice, trimmed of silence, peak-normalised,
    centred in a 0.5 s clip (cut to it when longer)."""
    rng = np.random.default_rng(seed)
    variants = [v for pair in zip(MALE_VARIANTS, FEMALE_VARIANTS) for v in pair] + list(MALE_VARIANTS[len(FEMALE_VARIANTS):])
    out = np.zeros((voices, 10, CLIP), dtype=np.float32)
    for v in range(voices):
        voice = Voice("en-us", variants[v % len(variants)], rate=int(rng.integers(170, 260)),
                      pitch=int(rng.integers(25, 75)), range=int(rng.integers(30, 80)))
        for d, word in enumerate(WORDS):
            s = synthesize(word, voice, seed=seed + v)
            x = resample(s.waveform.astype(np.float32) / 32768.0, s.sample_rate, SAMPLE_RATE)
            loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
            x = x[loud[0]:loud[-1] + 1][:CLIP] if loud.size else x[:CLIP]
            start = (CLIP - x.size) // 2
            out[v, d, start:start + x.size] = x / max(1e-6, np.abs(x).max())
    return out


def augment(clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random gain (0.5-1), circular shift (+-40 ms) and noise (-40 dB) per clip: (..., CLIP)."""
    flat = clips.reshape(-1, CLIP)
    shift = torch.randint(-640, 641, (flat.shape[0],), generator=gen)
    idx = (torch.arange(CLIP).unsqueeze(0) - shift.unsqueeze(1)) % CLIP
    out = flat.gather(1, idx) * (0.5 + 0.5 * torch.rand(flat.shape[0], 1, generator=gen))
    out = out + 0.01 * torch.randn(out.shape, generator=gen)
    return out.reshape(clips.shape)


def sorted_batch(bank: torch.Tensor, train_voices: int, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """(batch, length * CLIP): sorted digit runs, each clip in a random training voice, augmented."""
    start = torch.randint(0, 10, (batch, 1), generator=gen)
    digits = (start + torch.arange(length)) % 10
    voices = torch.randint(0, train_voices, (batch, length), generator=gen)
    return augment(bank[voices, digits], gen).reshape(batch, length * CLIP)


def embed(encoder, clips: torch.Tensor) -> torch.Tensor:
    """One encoder frame per clip: (n, CLIP) -> (n, channels)."""
    with torch.inference_mode():
        return torch.cat([encoder(clips[i:i + 256])[:, 0] for i in range(0, clips.shape[0], 256)])


def digit_classifier(encoder, bank: torch.Tensor, train_voices: int, gen: torch.Generator, epochs: int = 300) -> float:
    """Test accuracy of an MLP on frozen encoder frames: trained on 8 augmented copies of the
    training voices' clips, tested on the other voices."""
    voices = bank.shape[0]
    train = bank[:train_voices].reshape(-1, CLIP).repeat(8, 1)
    y_train = torch.arange(10).repeat(train_voices).repeat(8)
    test = bank[train_voices:].reshape(-1, CLIP)
    y_test = torch.arange(10).repeat(voices - train_voices)
    x_train, x_test = embed(encoder, augment(train, gen)), embed(encoder, test)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    mlp = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], 128), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                              torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(mlp.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        loss = torch.nn.functional.cross_entropy(mlp(x_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    mlp.eval()
    with torch.no_grad():
        return float((mlp(x_test).argmax(1) == y_test).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voices", type=int, default=40, help="eSpeak voices rendered (default %(default)s)")
    p.add_argument("--test-voices", type=int, default=10, help="voices held out for the digit classifier (default %(default)s)")
    p.add_argument("--length", type=int, default=8, help="clips per sequence, at most 10 (default %(default)s)")
    p.add_argument("--steps", type=int, default=4, help="prediction steps k = 1..STEPS (default %(default)s)")
    p.add_argument("--negatives", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batches", type=int, default=30, help="batches per epoch (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not 2 <= args.length <= 10 or args.steps >= args.length:
        p.error("--length must be 2..10 (a sorted run longer than 10 repeats digits) and --steps below it")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    t0 = time.time()
    bank = torch.from_numpy(render_digits(args.voices, args.seed))
    train_voices = args.voices - args.test_voices
    print(f"rendered 10 digits x {args.voices} voices in {time.time() - t0:.1f} s "
          f"({train_voices} for training, {args.test_voices} held out)")

    cfg = CPCConfig(
        # batch norm: with channel norm this model stays at chance for hundreds of steps
        encoder=EncoderConfig(channels=64, kernels=(10, 8, 10, 10), strides=(10, 8, 10, 10), paddings=(0, 0, 0, 0),
                              norm="batch"),
        context=ContextConfig(kind="gru", hidden=64),
        predictor=PredictorConfig(kind="linear", steps=args.steps),
    )
    model = CPCModel(cfg)
    random_encoder = CPCModel(cfg).encoder.eval()
    loss_fn = InfoNCELoss(args.negatives, "same_utterance")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * args.batches)
    utterance = torch.arange(args.batch_size)
    print(f"sequences of {args.length} clips -> {model.num_frames(args.length * CLIP)} frames; "
          f"chance accuracy {1 / (args.negatives + 1):.3f}")
    for epoch in range(1, args.epochs + 1):
        t = time.time()
        model.train()
        total, acc = 0.0, torch.zeros(args.steps)
        for _ in range(args.batches):
            out = model(sorted_batch(bank, train_voices, args.batch_size, args.length, gen))
            r = loss_fn(out.z, out.predictions, utterance=utterance, generator=gen)
            opt.zero_grad()
            r.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += r.loss.item()
            acc += r.accuracy
        acc /= args.batches
        print(f"epoch {epoch:2d}  loss {total / args.batches:6.3f}  contrastive accuracy {acc.mean():.3f} "
              f"(k=1..{args.steps}: " + " ".join(f"{a:.3f}" for a in acc.tolist()) + f")  {time.time() - t:.1f} s")
    model.eval()
    cpc_acc = digit_classifier(model.encoder, bank, train_voices, gen)
    rand_acc = digit_classifier(random_encoder, bank, train_voices, gen)
    print(f"digit classifier on the frozen encoder, unseen voices: CPC {cpc_acc:.3f}, random init {rand_acc:.3f} "
          f"(chance 0.100); total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
