from vcap.models.video_llm.video_llm import VideoLLMCaptioner

__all__ = ["VideoLLMCaptioner"]
