"""``python -m cpc_speech.cli`` (also what ``torchrun -m cpc_speech.cli`` runs)."""

import sys

from cpc_speech.cli import main

sys.exit(main())
