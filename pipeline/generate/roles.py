"""Which teacher plays each role of a generate run, and what a generate run's identity is.

Roles: `instructions` (bootstrapping, classification, instances, Magpie's instructions and
later user turns: `teacher`), `evolution` (rewrites and the equality check: `evol_teacher`),
`responses` (`response_teacher`), `tags` (Magpie's tags: `tag_teacher`) and `user` (the
simulated user of conversations: `user_teacher`); an unset role is served by `teacher`.
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
    "tag_teacher": "tags",
    "user_teacher": "user",
}
ROLE_FLAGS = {
    "evol_teacher": "--evol-teacher",
    "response_teacher": "--response-teacher",
    "tag_teacher": "--tag-teacher",
    "user_teacher": "--user-teacher",
}
OTHER_ROLE_FIELDS = ("evol_teacher", "response_teacher", "tag_teacher", "user_teacher")

# Run settings outside the identity: where the run goes, how it reports, two limits
# whose raising continues the same work (earlier passes replay from the journals), and
# where the teacher calls run (the executors give the same answers and journals).
RUN_FIELDS = ("seeds", "output_dir", "run_id", "quiet", "max_top_ups", "executor", "ray")


def role_teachers(config: GenerateConfig) -> dict[str, TeacherConfig]:
    """role -> the teacher config that serves it (unset roles fall back to `teacher`)."""
    return {
        "instructions": config.teacher,
        "evolution": config.evol_teacher or config.teacher,
        "responses": config.response_teacher or config.teacher,
        "tags": config.tag_teacher or config.teacher,
        "user": config.user_teacher or config.teacher,
    }


def active_roles(config: GenerateConfig) -> dict[str, TeacherConfig]:
    """The roles this run's method and settings call (`role_teachers` for those only):
    `tags` for Magpie with tags, `user` for conversations that the simulator goes on."""
    skip = set()
    if config.method != "magpie" or not config.magpie.tags:
        skip.add("tags")
    if config.method == "magpie" or config.conversation.range[1] == 1:
        skip.add("user")
    return {role: tc for role, tc in role_teachers(config).items() if role not in skip}


def generate_identity(config: GenerateConfig) -> dict[str, Any]:
    """What decides the rows of a run: the config with every role resolved (an unset role
    and one set to a copy of `teacher` are the same work), minus `RUN_FIELDS` and every
    role's runtime settings (`distillery.identity`), plus a digest of the seeds' contents
    (Magpie reads no seeds: none)."""
    from distillery.resources import seeds_path

    roles = role_teachers(config)
    resolved = config.model_copy(
        update={field: roles[role] for field, role in ROLE_FIELDS.items() if field != "teacher"}
    )
    exclude = [*RUN_FIELDS, *teacher_runtime_keys(ROLE_FIELDS), *_unused(config)]
    if config.method == "magpie":
        return config_identity(resolved, exclude=exclude, inputs={})
    seeds = config.seeds if config.seeds.startswith("hf:") else seeds_path(config.seeds)
    return config_identity(resolved, exclude=exclude, inputs={"seeds": input_identity(seeds)})


def _unused(config: GenerateConfig) -> list[str]:
    """Sections a run does not use, left out of its identity (a single-turn Self-Instruct
    run keeps the identity it had before Magpie and conversations existed)."""
    unused = []
    if config.method != "magpie":
        unused += ["magpie", "tag_teacher"]
    if config.conversation.range == (1, 1):
        unused += ["conversation", "user_teacher"]
    return unused


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
    for field in OTHER_ROLE_FIELDS:
        explicit = role_flags.get(field)
        on_command_line = any(o.split("=", 1)[0] in (field, f"{field}.spec") for o in overrides)
        if explicit is not None:
            out.append(f"{field}.spec={explicit}")
        elif teacher is not None and getattr(config, field) is not None and not on_command_line:
            out.append(f"{field}.spec={teacher}")
    return out
