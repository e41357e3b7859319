"""mambaflow.targets"""
