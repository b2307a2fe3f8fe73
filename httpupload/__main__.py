"""``python -m httpupload``: the operator command (see ``httpupload.cli``)."""

import sys

from httpupload.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m httpupload"))
