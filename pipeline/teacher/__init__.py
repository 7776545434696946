"""The teacher engine: every LLM call in the pipeline goes through `Teacher`."""

from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.types import ChatRequest, Completion

__all__ = ["ChatRequest", "Completion", "Teacher", "TeacherConfig"]
