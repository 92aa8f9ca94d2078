"""Corpora: manifests and loaders for real layouts (LibriSpeech, Common Voice, folders, HF
datasets); the offline eSpeak NG corpus generator is :mod:`cpc_speech.synth`."""
