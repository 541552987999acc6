"""``python -m vaultd``: the daemon, as the ``vaultd`` command."""

from ._daemon import main

raise SystemExit(main())
