import sys

from tether.agent.main import main

sys.exit(main())
