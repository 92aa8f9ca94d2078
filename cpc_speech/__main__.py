import sys

from cpc_speech.cli import main

sys.exit(main())
