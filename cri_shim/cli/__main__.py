import sys

from cri_shim.cli import main

sys.exit(main())
