"""The shipped demo CLIP: its generated data (`data`, `pool`), from-scratch init (`init`), optimizer (`optim`), training
(`train`, `clipedge demo train`), zero-shot evaluation (`evaluate`) and writing it as a HF checkpoint (`save`). The
checkpoint itself is `demo_checkpoint/`, package data."""
