from vcap.runners.runner_base import RunnerBase

__all__ = ["RunnerBase"]
