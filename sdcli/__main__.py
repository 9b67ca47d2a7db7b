"""``python -m sdcli``: the same as the ``sd`` console script."""

from sdcli.app import main

main()
