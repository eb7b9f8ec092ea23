"""The session's user (tests/importing/user_pipeline.py): their model, scalers and files, written once."""

from user_pipeline import user

__all__ = ["user"]
