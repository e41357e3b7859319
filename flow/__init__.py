"""mambaflow.flow"""
