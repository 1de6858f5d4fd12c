from vcap.models import blip2, clip4clip, clipcap, video_llm, xclip_lstm  # noqa: F401  (registration)
from vcap.models.base_model import BaseModel

__all__ = ["BaseModel"]
