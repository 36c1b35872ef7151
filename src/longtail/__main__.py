"""``python -m longtail``: the command-line tool."""

import logging
import os
import sys

from .cli import main

code = main()
if os.environ.get("WORLD_SIZE", "1") != "1":
    # Under torchrun every file is written (atomically, synced) when main returns; leave without running C++
    # static destructors, in which gloo's threads have aborted a finished rank at times ("terminate called
    # without an active exception", exit -6) on a loaded machine.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
