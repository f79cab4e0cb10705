"""``python -m canaryctl``: the same CLI as the ``canaryctl`` command."""

from canaryctl.cli.main import main

raise SystemExit(main())
