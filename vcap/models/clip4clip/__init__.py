from vcap.models.clip4clip.clip4clip import CLIP4Clip

__all__ = ["CLIP4Clip"]
