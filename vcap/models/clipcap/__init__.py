from vcap.models.clipcap import clipcap  # noqa: F401  (registration)
