"""Test support shared by the test modules and the benchmarks: the loopback LLM server
(`mockserver`) and the teacher fixtures and config builders (`teacher`)."""
