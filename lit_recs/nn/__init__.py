"""The maths shared by several models, in plain torch (never imports lightning).

A block used by one model only lives in that model's file (`MFNet` in `models/mf.py`); it moves here
when a second model needs it (embeddings with feature fields, MLP towers, FM/FFM interactions, the
SLIM layer, the transformer encoder of the roadmap).
"""
