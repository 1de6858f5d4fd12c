from vcap.datasets.builders import synthetic  # noqa: F401  (registration)
from vcap.datasets.builders.base import BaseBuilder

__all__ = ["BaseBuilder"]
