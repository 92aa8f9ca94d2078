"""The offline eSpeak NG corpus generator behind ``cpc-speech synth`` (entry point:
:func:`cpc_speech.synth.corpus.synthesize_corpus`)."""
