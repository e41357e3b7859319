"""mambaflow.models"""
