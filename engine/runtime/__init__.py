"""Stage 4b, inference: backends, the window runners, the stage pipeline, batch runs and real time."""
