"""The command line: `backup-monitor` and its commands (main: parser, commands, lazy imports
so `--help` loads nothing heavy) and the demo sandbox (demo: a library the CLI drives).

May import everything; nothing imports the CLI.
"""
