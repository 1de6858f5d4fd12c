from vcap.tasks import captioning, retrieval, scst  # noqa: F401  (registration)
from vcap.tasks.base_task import BaseTask

__all__ = ["BaseTask"]
