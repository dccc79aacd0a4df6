"""``cleo-dask validate``: check a workflow spec completely (schema, import paths, graph) without running it.

Exit codes: 0 valid, 2 not (the one-line message names what is wrong).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from cleo_dask.cli.common import fail, importable_cwd
from cleo_dask.errors import WorkflowError


def register(sub: Any) -> None:
    """Add ``validate`` to the ``cleo-dask`` parser."""
    v = sub.add_parser("validate", help="check a workflow spec without running it",
                       description="Validate a spec completely (schema, import paths, graph). Exit 0 if valid, 2 if not.")
    v.add_argument("spec", help="a spec file (.yaml/.yml/.json) or an import path package.module:name")
    v.add_argument("--agent-file", help="YAML/JSON file with the agent")
    v.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    """``cleo-dask validate``."""
    from cleo_dask.core.spec import load_spec
    importable_cwd(args.spec)
    try:
        spec = load_spec(args.spec, agent_file=args.agent_file)
    except WorkflowError as exc:
        return fail(str(exc))
    wf = spec.workflow
    print(f"{args.spec}: valid: workflow {wf.name!r}, {len(wf)} nodes, agent {spec.agent.id!r}")
    for name, node in wf.nodes.items():
        print(f"  {name}" + (f" <- {', '.join(node.parents)}" if node.parents else ""))
    required = set(wf.required_parameters)
    for name in wf.parameters:
        given = f" = {json.dumps(spec.inputs[name], default=repr)} (spec inputs)" if name in spec.inputs else ""
        print(f"  parameter {name}" + (" (required)" if name in required else " (optional)") + given)
    return 0
