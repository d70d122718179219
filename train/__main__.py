"""`python -m merclip.train ARGS` == `merclip train ARGS`; the form torchrun launches:

torchrun --nproc_per_node=N -m merclip.train --dataset mosei --data-root DIR ...
"""

import sys

from merclip.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
