#!/usr/bin/env python3
"""Builds the bundled sample data: Fashion-MNIST images as sample_data/fashion_mnist/<class>/<name>.png.

    python tools/make_sample_data.py        # rewrites sample_data/ (the result is committed to the repo)

Source: the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/*.gz, idx format), or
keras.datasets.fashion_mnist on a connected machine. Takes the first --per_class images of each class from
the test set, in file order, so the output is the same on every run. Fashion-MNIST is MIT-licensed
(Copyright 2017 Zalando SE); the notice is written to sample_data/FASHION_MNIST_LICENSE.txt, outside the
image folder, so `--src sample_data/fashion_mnist` holds nothing but class folders.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
from absl import app, flags
from PIL import Image

from shared import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, REPO_ROOT, fashion_mnist_files, read_fashion_mnist

LICENSE = """\
Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist), images in sample_data/fashion_mnist/,
made by tools/make_sample_data.py from the first {per_class} test-set images of each class.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of
the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

flags.DEFINE_string("out", str(REPO_ROOT / "sample_data"), "Folder to (re)write.")
flags.DEFINE_integer("per_class", 100, "Images per class.")
flags.DEFINE_string("debian_dir", FASHION_MNIST_DIR, "Where dataset-fashion-mnist puts its files.")
FLAGS = flags.FLAGS


def load_test_set(debian_dir: str) -> tuple[np.ndarray, np.ndarray]:
    if all(map(os.path.exists, fashion_mnist_files(debian_dir, "test"))):
        return read_fashion_mnist(debian_dir, "test")
    print(f"{debian_dir} has no Fashion-MNIST files (apt install dataset-fashion-mnist); trying keras.datasets")
    import keras

    _, (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    return x_test, y_test


def main(argv):
    del argv
    images, labels = load_test_set(FLAGS.debian_dir)
    root = os.path.join(FLAGS.out, "fashion_mnist")
    shutil.rmtree(root, ignore_errors=True)
    for label, name in enumerate(FASHION_MNIST_CLASSES):
        indices = np.flatnonzero(labels == label)[: FLAGS.per_class]
        if len(indices) < FLAGS.per_class:
            sys.exit(f"only {len(indices)} test images of class {name}")
        os.makedirs(os.path.join(root, name))
        for index in indices:
            Image.fromarray(images[index]).save(os.path.join(root, name, f"test_{index:05d}.png"), optimize=True)
    with open(os.path.join(FLAGS.out, "FASHION_MNIST_LICENSE.txt"), "w") as f:
        f.write(LICENSE.format(per_class=FLAGS.per_class))
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root) for n in names)
    print(f"wrote {len(FASHION_MNIST_CLASSES) * FLAGS.per_class} images ({size / 1e6:.2f} MB) to {root}")


if __name__ == "__main__":
    app.run(main)
