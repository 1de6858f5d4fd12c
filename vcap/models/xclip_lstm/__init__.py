from vcap.models.xclip_lstm.xclip_lstm import XCLIPLSTMCaptioner

__all__ = ["XCLIPLSTMCaptioner"]
