"""mambaflow.dialects"""
