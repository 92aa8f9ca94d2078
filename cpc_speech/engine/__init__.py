"""Run machinery shared by pretraining (:mod:`cpc_speech.train`) and fine-tuning
(:mod:`cpc_speech.finetune`).

* :mod:`~cpc_speech.engine.run_dir`: the run folder (lock, config file + resume check, last/best
  checkpoints and rotation, ``log.jsonl``, ``result.json``);
* :mod:`~cpc_speech.engine.checkpoint`: atomic, versioned checkpoint files read with
  ``weights_only=True``; ``load_model``;
* :mod:`~cpc_speech.engine.device`: device choice, CPU threads, the precision every rank shares;
* :mod:`~cpc_speech.engine.precision`: what ``auto`` precision means on this machine;
* :mod:`~cpc_speech.engine.seeding`: the seeds of steps and epochs (exact resume depends on them);
* :mod:`~cpc_speech.engine.distributed`: ``torchrun`` process-group helpers;
* :mod:`~cpc_speech.engine.schedule`: learning-rate multipliers by step.
"""
