"""Which teacher plays each role of a generate run, and what a generate run's identity is.

Roles: `instructions` (bootstrapping, classification, instances: `teacher`), `evolution`
(rewrites and the equality check: `evol_teacher`, default `teacher`) and `responses`
(`response_teacher`, default `teacher`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillery.generate.config import GenerateConfig
from distillery.identity import teacher_runtime_keys
from distillery.runstate import config_identity, input_identity
from distillery.teacher.config import TeacherConfig

# config field -> role; the role-specific flag of the CLI for each field
ROLE_FIELDS = {
    "teacher": "instructions",
    "evol_teacher": "evolution",
    "response_teacher": "responses",
}
ROLE_FLAGS = {"evol_teacher": "--evol-teacher", "response_teacher": "--response-teacher"}

# Run settings outside the identity: where the run goes, how it reports, and two limits
# whose raising continues the same work (earlier passes replay from the journals).
RUN_FIELDS = ("seeds", "output_dir", "run_id", "quiet", "max_top_ups")


def role_teachers(config: GenerateConfig) -> dict[str, TeacherConfig]:
    """role -> the teacher config that serves it (unset roles fall back to `teacher`)."""
    return {
        "instructions": config.teacher,
        "evolution": config.evol_teacher or config.teacher,
        "responses": config.response_teacher or config.teacher,
    }


def generate_identity(config: GenerateConfig) -> dict[str, Any]:
    """What decides the rows of a run: the config with every role resolved (an unset role
    and one set to a copy of `teacher` are the same work), minus `RUN_FIELDS` and every
    role's runtime settings (`distillery.identity`), plus a digest of the seeds' contents."""
    from distillery.resources import seeds_path

    roles = role_teachers(config)
    resolved = config.model_copy(
        update={"evol_teacher": roles["evolution"], "response_teacher": roles["responses"]}
    )
    exclude = [*RUN_FIELDS, *teacher_runtime_keys(ROLE_FIELDS)]
    seeds = config.seeds if config.seeds.startswith("hf:") else seeds_path(config.seeds)
    return config_identity(resolved, exclude=exclude, inputs={"seeds": input_identity(seeds)})


def teacher_flag_overrides(
    config: GenerateConfig,
    teacher: str | None,
    role_flags: dict[str, str | None],
    overrides: Sequence[str],
) -> list[str]:
    """`--teacher SPEC` sets the spec of every role section the config holds that is not set
    on the same command line (by its role flag, e.g. `--response-teacher`, or by a
    `response_teacher.spec=` / `response_teacher=` override); role flags set their own role.
    Unset role sections need nothing: they follow `teacher`."""
    out: list[str] = []
    for field in ("evol_teacher", "response_teacher"):
        explicit = role_flags.get(field)
        on_command_line = any(o.split("=", 1)[0] in (field, f"{field}.spec") for o in overrides)
        if explicit is not None:
            out.append(f"{field}.spec={explicit}")
        elif teacher is not None and getattr(config, field) is not None and not on_command_line:
            out.append(f"{field}.spec={teacher}")
    return out
