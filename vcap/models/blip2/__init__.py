from vcap.models.blip2.blip2_opt import Blip2OPTVideo

__all__ = ["Blip2OPTVideo"]
