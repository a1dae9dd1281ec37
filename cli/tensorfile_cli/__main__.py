"""``python -m tensorfile_cli``: the same as the ``tensorfile`` command."""

from tensorfile_cli.main import main

main()
