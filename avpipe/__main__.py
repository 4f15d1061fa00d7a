"""``python -m avpipe`` = the ``avpipe`` command."""
from avpipe.cli import main

if __name__ == "__main__":
    main()
