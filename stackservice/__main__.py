import sys

from stackservice.cli import main

sys.exit(main())
