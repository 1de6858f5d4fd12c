"""Evaluate a vcap project: `python evaluate.py --cfg-path P --options model.checkpoint=PATH`."""
from vcap.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
