"""The teacher engine: every LLM call in the pipeline goes through `Teacher`."""

from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.types import CallResult, ChatRequest

__all__ = ["CallResult", "ChatRequest", "Teacher", "TeacherConfig"]
