"""Evaluating the student (`distillery eval`)."""
