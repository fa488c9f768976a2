"""The operator's files: reading a file a setting names (settingfile: regular, bounded,
never waiting on a FIFO), the one bounded YAML reader (yamlfile), and the jobs file (jobsfile:
every entry validated, all applied in one transaction). The channels file is notify.config.

May import the pure core and the store; never the runtime, the HTTP surfaces or the CLI.
"""
