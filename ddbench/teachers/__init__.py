"""Teachers: the documented recipe, the cache, external checkpoints, and `TeacherStore`, the
`TeacherProvider` the CLI installs (`make_teacher_provider`). Names import on first use, so the
CLI can load `ddbench.teachers.commands` without torch."""

from ddbench.core.lazy import lazy_exports

_EXPORTS = {
    "extract_state_dict": "checkpoints",
    "load_teacher_checkpoint": "checkpoints",
    "RECIPES": "recipes",
    "TeacherRecipe": "recipes",
    "recipe_for": "recipes",
    "recipe_hash": "recipes",
    "TeacherStore": "store",
    "accuracy_floor": "store",
    "make_teacher_provider": "store",
    "measure_accuracy": "store",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
