"""``python -m httpupload``: the operator command (see ``httpupload.admin``)."""

import sys

from httpupload.admin import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m httpupload"))
