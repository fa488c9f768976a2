"""`python -m service` is the `backup-monitor` command."""

from service.cli import main

raise SystemExit(main())
