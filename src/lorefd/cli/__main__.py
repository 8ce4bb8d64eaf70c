import sys

from lorefd.cli import main

sys.exit(main())
