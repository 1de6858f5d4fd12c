from vcap.models.blip2.blip2_opt import Blip2OPTVideo
from vcap.models.blip2.blip2_t5 import Blip2T5Video

__all__ = ["Blip2OPTVideo", "Blip2T5Video"]
