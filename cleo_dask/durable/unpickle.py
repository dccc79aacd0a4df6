"""Loading what cleo_dask persisted (journal specs, result files), whichever module layout wrote it.

Pickles name classes and functions by module.  Files written before cleo_dask's modules moved
into subpackages name the flat modules (``cleo_dask._workflow.Workflow``,
``cleo_dask._worker.NodeOutput``...); :class:`Unpickler` maps those names to where the objects
live now (:data:`MODULES`, then :data:`NAMES` for objects that moved between modules since).  A
pickle naming a cleo_dask module or object this version does not have is refused with a
:class:`StoreError` naming the file and the schema version read, never a bare ``ImportError``.

When an object moves to another module, add its old ``(module, name)`` to :data:`NAMES`.
"""
from __future__ import annotations

import io
import pickle
from typing import Any

from cleo_dask.errors import StoreError

_FLAT = {  # the flat layout's modules (cleo_dask/_x.py) -> their subpackage module
    "_errors": "errors", "_config": "config", "_engine": "engine",
    "_numbers": "util.numbers", "_sqlite": "util.sqlite", "_imports": "util.imports", "_gcpause": "util.gcpause",
    "_futures": "util.futures",
    "_agent": "core.agent", "_task": "core.task", "_workflow": "core.workflow", "_parameters": "core.parameters",
    "_nodecheck": "core.nodecheck", "_toposort": "core.toposort", "_outcome": "core.outcome",
    "_compile": "core.compile", "_worker": "core.worker", "_events": "core.events", "_spec": "core.spec",
    "_specread": "core.specread", "_inputs": "core.inputs", "_shipping": "core.shipping",
    "_run": "runs.run", "_runguard": "runs.guard", "_run_end": "runs.end", "_driver": "runs.driver",
    "_eventsend": "runs.eventsend", "_keep": "runs.keep", "_forget": "runs.forget", "_lost": "runs.lost",
    "_submission": "runs.submission",
    "_retry": "failures.retry", "_backoff": "failures.backoff", "_timeout": "failures.timeout",
    "_trigger": "failures.rules",
    "_admission": "admission.plugin", "_ratelimit": "admission.ratelimit", "_fair": "admission.fair",
    "_estimates": "admission.estimates", "_io": "admission.io", "_cluster_needs": "admission.cluster_needs",
    "_triggers": "schedules.triggers", "_misfire": "schedules.misfire", "_schedule_store": "schedules.store",
    "_prestage": "schedules.prestage", "_scheduler": "schedules.loop", "_serve": "cli.serve",
    "_journal": "durable.journal", "_resultstore": "durable.resultstore", "_durable": "durable.durability",
    "_plugin": "monitor.state", "_dashboard": "monitor.dashboard", "_visualize": "monitor.pictures",
    "_metrics": "monitor.metrics", "_logs": "monitor.logs", "_progress": "monitor.progress",
    "_notebook": "monitor.notebook", "_spans": "monitor.spans",
    "_local_cluster": "cluster.local", "_nanny_proc": "cluster.nanny_proc", "_connect": "cluster.connect",
    "_upload": "cluster.upload",
    "_cli_run": "cli.run", "_cli_runs": "cli.runs", "_cli_schedule": "cli.schedule", "_cli_types": "cli.types",
}

#: Whole modules renamed: old module -> the module its objects live in now.
MODULES: dict[str, str] = {
    **{f"cleo_dask.{old}": f"cleo_dask.{new}" for old, new in _FLAT.items()},
    "cleo_dask.cluster.shipping": "cleo_dask.core.shipping",
}

#: Single objects that moved since (looked up after :data:`MODULES`): (module, name) -> (module, name).
NAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("cleo_dask.core.worker", "NodeOutput"): ("cleo_dask.core.nodeoutput", "NodeOutput"),
    ("cleo_dask.core.workflow", "Node"): ("cleo_dask.core.node", "Node"),
}


def current_name(module: str, name: str) -> tuple[str, str]:
    """Where the object a pickle names as ``module.name`` lives now (itself if it did not move)."""
    module = MODULES.get(module, module)
    return NAMES.get((module, name), (module, name))


class Unpickler(pickle.Unpickler):
    """A pickle unpickler that reads old module names; ``where`` (the file) and ``schema`` (the
    format version read) name what is refused in a :class:`StoreError`."""

    def __init__(self, file: Any, *, where: str, schema: str):
        super().__init__(file)
        self.where, self.schema = where, schema

    def find_class(self, module: str, name: str) -> Any:
        new_module, new_name = current_name(module, name)
        if not (module == "cleo_dask" or module.startswith("cleo_dask.")):
            return super().find_class(module, name)
        try:
            found = super().find_class(new_module, new_name)
        except (ImportError, AttributeError):
            raise StoreError(f"{self.where} names {module}.{name}, which this cleo_dask does not have (it reads "
                             f"{self.schema}, the current module layout and the flat one before it): written by "
                             "another cleo_dask version") from None
        if (new_module, new_name) == ("cleo_dask.core.task", "_rebuild_shipped"):
            return self._shipped(found)
        return found

    def _shipped(self, rebuild: Any) -> Any:
        # a task spec sent by value keeps its fields as a nested pickle: read it with these names too
        def rebuild_shipped(blob: bytes) -> Any:
            try:
                return rebuild(blob)
            except (ImportError, AttributeError):
                fields = loads(blob, where=self.where, schema=self.schema)
                return self.find_class("cleo_dask.core.task", "_rebuild_spec")(*fields)
        return rebuild_shipped


def loads(data: bytes, *, where: str, schema: str) -> Any:
    """Unpickle ``data`` (a pickle or cloudpickle) written by this or an earlier module layout."""
    return Unpickler(io.BytesIO(data), where=where, schema=schema).load()
