import sys

from crio_py.cli import main

sys.exit(main())
