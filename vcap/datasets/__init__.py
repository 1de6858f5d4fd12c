from vcap.datasets import builders  # noqa: F401  (registration)
