"""Tasks say what is learned: loss, evaluation and metric names; one trainer serves them all.

A new task is a file with an AbstractTask subclass plus one line in TASKS.
"""

from dia_ode.tasks.base import AbstractTask, means, model_spec
from dia_ode.tasks.classification import ClassificationTask
from dia_ode.tasks.detection import DetectionTask
from dia_ode.tasks.diffusion import DiffusionTask
from dia_ode.util import unknown_name

TASKS: dict[str, type[AbstractTask]] = {
    ClassificationTask.name: ClassificationTask,
    DetectionTask.name: DetectionTask,
    DiffusionTask.name: DiffusionTask,
}


def list_tasks() -> list[str]:
    """Names accepted by get_task (and `dia-ode train --task`)."""
    return sorted(TASKS)


def get_task(name: str, options: dict | None = None) -> AbstractTask:
    """A task by name with its options (config's task_options); ValueError lists the valid names, or
    names the bad option."""
    if name not in TASKS:
        raise ValueError(unknown_name("task", name, list_tasks()))
    return TASKS[name](**(options or {}))


__all__ = ["AbstractTask", "ClassificationTask", "DetectionTask", "DiffusionTask", "TASKS", "get_task", "list_tasks", "means", "model_spec"]
