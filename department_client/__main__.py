import sys

from department_client.cli import main

sys.exit(main())
