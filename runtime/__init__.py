"""mambaflow.runtime"""
