"""One pretraining optimisation step: the model, the InfoNCE loss, Adam, the learning-rate
schedule and (fp16 on CUDA) the gradient scaler of a run, built from a :class:`PretrainConfig`
alone (no manifest, no run folder), so that the trainer, the benchmarks and experiments share it.

Exact resume: the step's randomness (negatives, dropout, augmentation) is seeded from
``(train.seed, step, rank)`` (:func:`cpc_speech.engine.seeding.step_seed`), and
:meth:`PretrainStep.state_dict` holds everything else that changes from step to step.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from cpc_speech.config import PretrainConfig
from cpc_speech.engine.device import pick_device, shared_precision
from cpc_speech.engine.distributed import DistInfo, all_gather_windows
from cpc_speech.engine.schedule import lr_multiplier
from cpc_speech.engine.seeding import step_seed
from cpc_speech.loss import InfoNCELoss
from cpc_speech.model.cpc import CPCModel


class PretrainStep:
    """Model + loss + optimizer of one run; :meth:`run` trains on one batch.

    ``device``: default ``train.device``; ``dist``: the DDP process group this rank belongs to
    (default: a single process). The model is initialised from ``train.seed``. ``forward_model``
    is what the step calls: the model, wrapped in DDP and/or ``torch.compile`` as configured
    (checkpoints hold the plain ``model``'s weights)."""

    def __init__(self, cfg: PretrainConfig, device: Optional[torch.device] = None, dist: Optional[DistInfo] = None):
        self.cfg = cfg
        tc = cfg.train
        self.dist = dist or DistInfo()
        self.device = torch.device(device) if device is not None else pick_device(tc.device)
        self.precision = shared_precision(tc.amp, self.device, self.dist)
        torch.manual_seed(tc.seed)
        self.model = CPCModel(cfg.model).to(self.device)
        self.loss_fn = InfoNCELoss(cfg.loss.negatives, cfg.loss.sampling, cfg.loss.temperature, cfg.loss.shared_negatives)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_multiplier(s, tc))
        self.forward_model = self.model
        if self.dist.enabled:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if tc.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.name == "fp16" else None
        self.step = 0  # optimisation steps taken (skipped batches included)

    def autocast(self):
        """The run's precision as a context manager (float32: a no-op)."""
        return self.precision.autocast(self.device)

    def loss(self, batch, generator: torch.Generator):
        """The InfoNCE result of ``batch`` (on the device) in the current mode; under
        ``loss.gather_across_ranks`` the other ranks' encoder frames join the negatives."""
        out = self.forward_model(batch.wav, target_wav=batch.target_wav)
        z = CPCModel.targets(out)
        remote = None
        if self.dist.enabled and self.cfg.loss.gather_across_ranks:
            remote = all_gather_windows(z, batch.speaker, batch.utterance, self.dist)
        # bf16 under autocast: the loss gathers and multiplies in bf16, scores in float32
        return self.loss_fn(z, out.predictions, batch.speaker, batch.utterance, generator=generator, remote=remote)

    def run(self, batch) -> Dict[str, object]:
        """One optimisation step on ``batch`` (on the device): ``loss``, per-step ``accuracy``,
        ``grad_norm`` (before clipping). A non-finite loss raises FloatingPointError."""
        tc = self.cfg.train
        seed = step_seed(tc.seed, self.step, self.dist.rank)
        torch.manual_seed(seed)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self.model.train()
        with self.autocast():
            result = self.loss(batch, gen)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(result.loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            result.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else torch.tensor(0.0)
        if not torch.isfinite(result.loss):
            raise FloatingPointError(f"loss is {result.loss.item()} at step {self.step}; lower train.lr or check the audio")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": result.loss.item(), "accuracy": result.accuracy.tolist(), "grad_norm": float(grad_norm)}

    def skip(self) -> None:
        """Count a step that had no usable window: the schedule advances, nothing is learned."""
        self.step += 1
        self.scheduler.step()

    def state_dict(self) -> Dict[str, object]:
        """The checkpoint fields of the training state (besides the model weights)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else {}, "step": self.step}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore the model, optimizer, schedule, scaler and step count of a checkpoint."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
