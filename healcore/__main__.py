import sys

from healcore.cli import main

sys.exit(main())
