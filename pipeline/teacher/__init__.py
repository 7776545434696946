"""The teacher engine: every LLM call in the pipeline goes through `Teacher`."""

from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.engine import Teacher
from pipeline.teacher.types import ChatRequest, Completion

__all__ = ["ChatRequest", "Completion", "Teacher", "TeacherConfig"]
