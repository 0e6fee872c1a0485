#!/usr/bin/env python3
"""Images in class folders -> TFRecord shards + dataset.json (tltrain.convert; --help lists the flags).

    python tools/make_tfrecords.py --src data/ --out records/
    python tools/make_tfrecords.py --verify records/     # every shard's framing, checksums and count

Works from a checkout before `pip install`; installed, the same tool is `tltrain-make-tfrecords`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tltrain import convert  # noqa: E402

if __name__ == "__main__":
    convert.run()
