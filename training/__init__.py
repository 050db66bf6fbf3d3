"""MGDSPR two-tower retrieval model: features, training and the model artifact.

Other packages use `training.artifact` (load, encode) and `training.train.train_day`.
"""
