# the builders register on the registry's first lookup (registry.add_builtins in vcap/__init__.py)
