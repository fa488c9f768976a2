"""`python -m service` is the `backup-monitor` command."""

from service.cli.main import main

raise SystemExit(main())
