"""Datasets for training and evaluation; `ltxv.data.synth` renders the synthetic shapes-world videos."""
