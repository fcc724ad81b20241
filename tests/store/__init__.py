"""Tests of corrflow.store and of the commands that write through it (a package, so that its conftest and helpers
do not shadow the top-level tests/conftest.py)."""
