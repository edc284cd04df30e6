"""How a prompt's meta group is named beside its solution group: the learner normalises
advantages per `group_id`, so the two must differ, and the driver must tell them apart."""

META_SUFFIX = ".meta"  # never produced by the planner's own ids (g00000001, g00000001r1)


def meta_group_id(gid: str) -> str:
    return gid + META_SUFFIX


def is_meta_group(group_id: str) -> bool:
    return group_id.endswith(META_SUFFIX)


def solution_group_id(group_id: str) -> str:
    """The prompt's (solution) group id for either of its two group ids."""
    return group_id.removesuffix(META_SUFFIX)
