import sys

from gptexp.study.runner import main

sys.exit(main())
