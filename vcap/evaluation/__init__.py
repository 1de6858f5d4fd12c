from vcap.evaluation.caption import caption_scores
from vcap.evaluation.retrieval import retrieval_metrics

__all__ = ["caption_scores", "retrieval_metrics"]
