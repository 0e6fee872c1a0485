"""A folder of labelled images -> TFRecord shards + dataset.json, in the one schema of tltrain.records.

Layouts: `src/<class>/**/<image>` (split here: stratified, by seed) or `src/{train,validation,test}/<class>/**`
(the given split is kept). Every file under `src` ends up written or skipped with a reason. One pass over the
files, one read of each; the output does not depend on the number of workers. Modules, in the order a file
meets them: options, scan, images (check, re-encode), workers (frame, write), policy (split, dedupe,
conflicts), shards (stage, publish), dataset_json, pipeline (convert()), cli.
"""

from tltrain.convert.cli import run
from tltrain.convert.dataset_json import Summary
from tltrain.convert.images import jpeg_header, read_file, to_rgb
from tltrain.convert.options import ConvertError, Options
from tltrain.convert.pipeline import convert

__all__ = ["ConvertError", "Options", "Summary", "convert", "jpeg_header", "read_file", "run", "to_rgb"]
