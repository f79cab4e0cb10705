import sys

from canaryctl.loadtester.cli import main

sys.exit(main())
