"""`python -m tltrain.convert --src images/ --out records/`."""

from tltrain.convert.cli import run

run()
