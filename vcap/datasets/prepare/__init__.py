"""Converters from the official annotation files to vcap annotations: ``vcap prepare <dataset>``.

Each converter reads the files a dataset's authors publish (found anywhere under ``--raw``),
checks that every referenced video exists under the video folder (``--videos``, default
``--raw``), and writes ``<out>/annotations/<name>.json`` (vcap records with video paths relative
to the video folder), ``<out>/missing_videos.txt``, ``<out>/summary.json`` (counts per split)
and a ``<out>/videos`` link to the video folder, which is where the dataset cards look.
"""
from vcap.datasets.prepare.common import Output, VideoIndex  # noqa: F401
from vcap.datasets.prepare.converters import CONVERTERS, prepare  # noqa: F401
