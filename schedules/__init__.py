"""mambaflow.schedules"""
