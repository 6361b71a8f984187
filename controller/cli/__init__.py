"""The ``edge-station`` command line (``main``) and its sub-commands."""
