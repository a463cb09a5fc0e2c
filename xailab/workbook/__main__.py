import sys

from xailab.workbook.runner import main

sys.exit(main())
