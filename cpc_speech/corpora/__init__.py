"""Corpora: manifests and loaders for real layouts (LibriSpeech, Common Voice, folders, HF
datasets) and the offline eSpeak NG corpus generator."""
