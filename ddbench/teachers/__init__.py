"""Teachers: the documented recipe, the cache, external checkpoints, and `TeacherStore`, the
`TeacherProvider` the CLI installs (`make_teacher_provider`)."""

from ddbench.teachers.checkpoints import extract_state_dict, load_teacher_checkpoint
from ddbench.teachers.recipes import RECIPES, TeacherRecipe, recipe_for, recipe_hash
from ddbench.teachers.store import TeacherStore, accuracy_floor, make_teacher_provider, measure_accuracy

__all__ = [
    "RECIPES",
    "TeacherRecipe",
    "TeacherStore",
    "accuracy_floor",
    "extract_state_dict",
    "load_teacher_checkpoint",
    "make_teacher_provider",
    "measure_accuracy",
    "recipe_for",
    "recipe_hash",
]
