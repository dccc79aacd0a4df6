"""The user's own code on a separately started cluster (issue 14, item 3).

A real ``dask scheduler`` and ``dask worker``, started from another directory with only cleo_dask
importable, run workflows whose tasks live in modules written to ``tmp_path``: those modules
travel by value with the graph; code that cannot travel goes with ``--upload`` /
``Engine(upload=...)``; code the cluster still cannot load is bad input (exit 2, ``cd.CodeError``).
"""
from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import cleo_dask as cd
from _dask_procs import Processes, cleo_dask_command, dask_command, env_with_cleo_only, wait_for_file
from cleo_dask.core import shipping as _shipping
from cleo_dask.cluster import upload as _upload


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory):
    """A stock scheduler and worker: started elsewhere, only cleo_dask on their path."""
    logs, elsewhere = tmp_path_factory.mktemp("bare-cluster"), tmp_path_factory.mktemp("elsewhere")
    procs = Processes(logs)
    env = env_with_cleo_only()
    try:
        procs.start("scheduler", dask_command() + ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                                   "--no-dashboard", "--scheduler-file", str(logs / "s.json")],
                    env, cwd=elsewhere)
        address = wait_for_file(logs / "s.json", procs)["address"]
        procs.start("worker", dask_command() + ["worker", address, "--nthreads", "2", "--no-dashboard"],
                    env, cwd=elsewhere)
        yield address, elsewhere, procs
    finally:
        procs.stop()


@pytest.fixture(autouse=True)
def _forget_registrations():
    """This process's later tests run their own modules by reference again."""
    yield
    import cloudpickle
    for name in cloudpickle.list_registry_pickle_by_value():
        if name.startswith("pipes_"):
            cloudpickle.unregister_pickle_by_value(sys.modules[name])
    _shipping.refresh()


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def cleo(cwd: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = env_with_cleo_only()
    if pythonpath is not None:
        env["PYTHONPATH"] += f":{pythonpath}"
    return subprocess.run(cleo_dask_command() + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


MYPIPES = """
    import os

    import cleo_dask as cd
    from textutil import shout          # a sibling module of the project: it travels too


    class Flaky(Exception):
        '''The user's own exception class (retry_on): by value to the worker and back.'''


    @cd.task(retries=1, retry_on=(Flaky,))
    def fetch(agent):
        if not os.path.exists(agent.config["marker"]):
            open(agent.config["marker"], "w").close()
            raise Flaky("first call")
        return ["a", "b"]


    def summarize(agent, fetch):         # a plain function, not decorated
        return shout(",".join(fetch) + " for " + agent.id)


    def has_items(fetch):
        return bool(fetch)


    ok = cd.Workflow("ok")
    ok.add(fetch)
    ok.add(summarize, after=["fetch"], when=has_items)
"""


@pytest.mark.slow
def test_own_modules_travel_by_value_to_a_stock_cluster(bare_cluster, tmp_path):
    address, _, procs = bare_cluster
    proj = write(tmp_path / "proj", {"mypipes.py": MYPIPES,
                                     "textutil.py": "def shout(text):\n    return text.upper()\n"})
    (proj / "agent.json").write_text(json.dumps({"id": "u1", "config": {"marker": str(tmp_path / "marker")}}))
    done = cleo(proj, "run", "mypipes:ok", "--agent-file", "agent.json", "--address", address,
                "--wait-workers", "1", "--no-progress", "--json", "out.json")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{procs.logs()}"
    nodes = json.loads((proj / "out.json").read_text())["nodes"]
    assert nodes["fetch"]["attempts"] == 2   # Flaky, retried: the class came back as the user's own
    assert nodes["summarize"]["value"] == "A,B FOR U1"


LOCKPKG = {
    "lockpkg/__init__.py": """
        import importlib.resources
        import threading

        import cleo_dask as cd

        GREETING = importlib.resources.files(__package__).joinpath("greeting.txt").read_text().strip()
        _LOCK = threading.Lock()          # a module-level lock: this code cannot travel by value


        @cd.task
        def answer(agent):
            with _LOCK:
                return f"{GREETING} {agent.id}"


        wf = cd.Workflow("lockpkg")
        wf.add(answer)
    """,
    "lockpkg/greeting.txt": "hello from\n",
}


@pytest.mark.slow
def test_code_that_cannot_travel_is_bad_input_until_uploaded(bare_cluster, tmp_path):
    address, _, procs = bare_cluster
    proj = write(tmp_path / "proj", LOCKPKG)
    (proj / "agent.json").write_text('{"id": "u2"}')
    args = ["run", "lockpkg:wf", "--agent-file", "agent.json", "--address", address, "--wait-workers", "1",
            "--no-progress"]
    done = cleo(proj, *args)
    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    assert "'lockpkg'" in done.stderr and "--upload PATH" in done.stderr and "_thread.lock" in done.stderr
    assert done.stdout == ""   # nothing was submitted: no table
    done = cleo(proj, *args, "--upload", "lockpkg", "--json", "-")   # the package directory, zipped
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{procs.logs()}"
    assert json.loads(done.stdout[done.stdout.index("{"):])["nodes"]["answer"]["value"] == "hello from u2"


@pytest.mark.slow
def test_a_task_the_cluster_cannot_load_exits_2_naming_the_module(bare_cluster, tmp_path):
    address, _, procs = bare_cluster
    lib = write(tmp_path / "lib", {"helperlib_c.py": "def shout(x):\n    return str(x).upper()\n"})
    proj = write(tmp_path / "proj", {"needslib.py": """
        import cleo_dask as cd
        import helperlib_c                # from outside the project: not sent by value


        @cd.task
        def loud(agent):
            return helperlib_c.shout("hi")


        wf = cd.Workflow("needslib")
        wf.add(loud)
    """})
    (proj / "agent.json").write_text('{"id": "u3"}')
    args = ["run", "needslib:wf", "--agent-file", "agent.json", "--address", address, "--wait-workers", "1",
            "--no-progress"]
    done = cleo(proj, *args, pythonpath=lib)
    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    assert "No module named 'helperlib_c'" in done.stderr and "--upload PATH" in done.stderr
    assert "node 'loud'" in done.stderr
    done = cleo(proj, *args, "--upload", str(lib / "helperlib_c.py"), pythonpath=lib)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{procs.logs()}"
    assert "loud  succeeded" in done.stdout


# -- from Python --------------------------------------------------------------------------------------
def own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> object:
    """Write ``text`` as a module of a project in ``tmp_path`` (the current directory) and import it."""
    name = f"pipes_{uuid.uuid4().hex[:8]}"
    proj = write(tmp_path / "proj", {f"{name}.py": text})
    monkeypatch.chdir(proj)
    monkeypatch.syspath_prepend(str(proj))
    return importlib.import_module(name)


@pytest.mark.slow
def test_engine_sends_own_code_and_a_journaled_run_resumes_elsewhere(bare_cluster, tmp_path, monkeypatch):
    address, elsewhere, procs = bare_cluster
    mod = own_module(tmp_path, monkeypatch, """
        import os
        from dataclasses import dataclass

        import cleo_dask as cd


        @dataclass(frozen=True)
        class Researcher(cd.Agent):      # the user's own agent class
            topic: str = "dask"


        @cd.task
        def plan(agent):
            return f"{agent.topic} plan"


        @cd.task
        def write_up(agent, plan):
            if not os.path.exists(agent.config["go"]):
                raise RuntimeError("not yet")
            return plan + " written"


        wf = cd.Workflow("research")
        wf.add(plan)
        wf.add(write_up, after=["plan"])
    """)
    agent = mod.Researcher("r1", config={"go": str(tmp_path / "go")}, topic="agents")
    with cd.Engine(address=address, store=str(tmp_path / "runs.db")) as engine:
        run = engine.submit(mod.wf, agent)
        out = run.result(timeout=60)
    assert out["plan"].value == "agents plan" and out["write_up"].status == "failed"
    assert "not yet" in repr(out["write_up"].error)
    (tmp_path / "go").touch()
    # another process, another directory, the module not importable: the journal kept the code
    done = subprocess.run(cleo_dask_command() + ["resume", run.id, "--store", str(tmp_path / "runs.db"),
                                                 "--address", address],
                          cwd=elsewhere, env=env_with_cleo_only(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{procs.logs()}"
    assert "write_up" in done.stdout and "succeeded" in done.stdout


@pytest.mark.slow
def test_engine_upload_and_code_errors(bare_cluster, tmp_path, monkeypatch):
    address = bare_cluster[0]
    lib = write(tmp_path / "lib", {"helperlib_py.py": "def twice(x):\n    return 2 * x\n"})
    monkeypatch.syspath_prepend(str(lib))
    mod = own_module(tmp_path, monkeypatch, """
        import cleo_dask as cd
        import helperlib_py


        @cd.task
        def double(agent):
            return helperlib_py.twice(21)
    """)
    with pytest.raises(cd.CodeError, match="not found"):
        cd.Engine(address=address, upload=[str(tmp_path / "missing.py")])
    with cd.Engine(address=address) as engine:
        failed = engine.run(mod.double)
    assert failed.status == "failed" and isinstance(failed.error, cd.CodeError)
    assert "helperlib_py" in str(failed.error) and "Engine(upload=[PATH])" in str(failed.error)
    with cd.Engine(address=address, upload=[lib / "helperlib_py.py"]) as engine:
        assert engine.run(mod.double).value == 42


# -- pure logic -----------------------------------------------------------------------------------------
def test_what_counts_as_the_users_own_code(tmp_path, monkeypatch):
    proj = write(tmp_path / "proj", {"mine.py": "X = 1\n", "pkg/__init__.py": "", "pkg/sub.py": "Y = 2\n",
                                     ".venv/lib/python3.11/site-packages/theirs.py": "Z = 3\n"})
    monkeypatch.chdir(proj)
    roots = _shipping._roots()
    modules = {"mine": proj / "mine.py", "pkg.sub": proj / "pkg" / "sub.py",
               "theirs": proj / ".venv/lib/python3.11/site-packages/theirs.py"}
    fake = {name: type(sys)(name) for name in modules}
    for name, path in modules.items():
        fake[name].__file__ = str(path)
        _shipping._digests.pop(name, None)
    assert _shipping.user_module("mine", fake["mine"], roots) is not None
    assert _shipping.user_module("pkg.sub", fake["pkg.sub"], roots) is not None
    assert _shipping.user_module("theirs", fake["theirs"], roots) is None            # site-packages
    assert _shipping.user_module("json", sys.modules["json"], roots) is None         # the standard library
    assert _shipping.user_module("cleo_dask.core.task", sys.modules["cleo_dask.core.task"], roots) is None
    assert _shipping.user_module("pytest", sys.modules["pytest"], roots) is None
    assert _shipping.user_module("__main__", sys.modules["__main__"], roots) is None  # cloudpickle's own case
    for name in modules:
        _shipping._digests.pop(name, None)


def test_uploads_are_checked_and_directories_zipped(tmp_path):
    import zipfile
    write(tmp_path, {"pkg/__init__.py": "", "pkg/data.txt": "d", "pkg/__pycache__/x.pyc": "",
                     "flat/a.py": "", "flat/.hidden/b.py": "", "empty/readme.txt": "", "notes.txt": ""})
    [(_, pkg)] = _upload.files_to_send([tmp_path / "pkg"])
    assert sorted(zipfile.ZipFile(pkg).namelist()) == ["pkg/__init__.py", "pkg/data.txt"]
    [(_, flat)] = _upload.files_to_send(str(tmp_path / "flat"))
    assert zipfile.ZipFile(flat).namelist() == ["a.py"]
    [(_, again)] = _upload.files_to_send([tmp_path / "pkg"])
    assert Path(again).name == Path(pkg).name   # the same content: the same upload
    for bad, message in ((tmp_path / "nope", "not found"), (tmp_path / "notes.txt", "not a module"),
                         (tmp_path / "empty", "no Python modules")):
        with pytest.raises(cd.CodeError, match=message):
            _upload.files_to_send([bad])
    for made in (pkg, flat, again):
        shutil.rmtree(Path(made).parent)   # (an upload removes the zips it made once sent)


@pytest.mark.slow
def test_an_upload_with_a_syntax_error_names_it(bare_cluster, tmp_path):
    # a SyntaxError pickled back from the scheduler prints as "None" unless its args are read
    address, _, _ = bare_cluster
    bad = write(tmp_path, {"pipes_bad_syntax.py": "def broken(:\n"}) / "pipes_bad_syntax.py"
    with pytest.raises(cd.CodeError, match=r"SyntaxError: invalid syntax \(line 1\)"):
        cd.Engine(address, upload=[bad], timeout=30)


@pytest.mark.slow
def test_a_module_only_another_cluster_lacks_goes_by_reference_here(bare_cluster, client, tmp_path, monkeypatch):
    """cloudpickle's by-value registry is one per process: it follows the cluster being sent to."""
    address, _, _ = bare_cluster
    mod = own_module(tmp_path, monkeypatch, """
        import threading

        import cleo_dask as cd

        LOCK = threading.Lock()            # module state that cannot travel by value


        @cd.task
        def double(agent, x: int = 2):
            with LOCK:
                return 2 * x
    """)
    with cd.Engine(address) as elsewhere:             # that cluster lacks the module: by value, refused
        assert isinstance(elsewhere.run(mod.double, cd.Agent("a")).error, cd.CodeError)
    with cd.Engine(client=client) as here:            # this one imports it: by reference
        assert here.run(mod.double, cd.Agent("a")).value == 4


SCRIPT_WITH_BATCHES = """
    import sys

    import cleo_dask as cd


    def quick(agent, **parents):      # defined in the script itself: __main__
        return 1 + sum(parents.values())


    class Step:                       # a task object of the script's own class
        def run(self, agent):
            return 10


    if __name__ == "__main__":
        wf = cd.Workflow("script-batches")
        for i in range(6):
            wf.add(quick, name=f"q{i}", duration=0.001)        # declared short: batched
        wf.add(Step(), name="step", duration=0.001)
        wf.add(quick, name="all", after=[f"q{i}" for i in range(6)] + ["step"], duration=0.001)
        with cd.Engine(sys.argv[1]) as engine:
            run = engine.submit(wf, cd.Agent("u"))
            batched = any(len(names) > 1 for names in run._units.values())
            out = run.result(timeout=60)
        print(batched, out.ok, out["all"].value)
"""


def test_a_scripts_own_functions_run_in_batches_on_a_stock_cluster(bare_cluster, tmp_path):
    # the worker's __main__ is `dask worker`'s: a batch naming the script's __main__ by reference
    # failed to load there ("Can't get attribute 'quick'"); it must travel by value, as unbatched units do
    address, _, procs = bare_cluster
    script = write(tmp_path, {"pipeline.py": SCRIPT_WITH_BATCHES}) / "pipeline.py"
    done = subprocess.run([sys.executable, str(script), address], cwd=tmp_path, env=env_with_cleo_only(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{procs.logs()}"
    assert done.stdout.split() == ["True", "True", "17"]
