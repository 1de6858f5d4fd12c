# the builders register on the registry's first lookup (vcap.common.registry.BUILTIN_MODULES)
