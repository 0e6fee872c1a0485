#!/usr/bin/env python3
"""Images in class folders -> TFRecord shards + dataset.json (tltrain.convert; --help lists the flags).

    python tools/make_tfrecords.py --src data/ --out records/
    python tools/make_tfrecords.py --verify records/     # every shard's framing, checksums and count

The same tool is `tltrain-make-tfrecords` once tltrain is installed (`./run` installs it).
"""

from tltrain import convert

if __name__ == "__main__":
    convert.run()
