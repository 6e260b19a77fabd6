"""The shipped model, its card and evaluation report (package data)."""
