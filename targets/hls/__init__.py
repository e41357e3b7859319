"""mambaflow.targets.hls"""
