"""``python -m vaultd.ctl``: vaultctl without its installed script (the demo runs it this way)."""

from .main import main

raise SystemExit(main())
