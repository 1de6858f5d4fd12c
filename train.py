"""Train a vcap project: `torchrun --nproc_per_node=N train.py --cfg-path projects/....yaml [--options k=v ...]`."""
from vcap.cli import train_main

if __name__ == "__main__":
    train_main()
