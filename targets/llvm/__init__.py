"""mambaflow.targets.llvm"""
