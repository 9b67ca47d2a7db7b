"""The ``sd`` command line (``sdcli.app``) and the plain functions behind its commands that have no
better home (the demo, the fuzz run)."""
