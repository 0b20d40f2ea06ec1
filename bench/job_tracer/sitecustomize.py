"""Tracer of bench/job_overhead.py: CPU time to main() and in imports, per Snakemake job.

bench/job_overhead.py puts this folder on PYTHONPATH, so every Python process of the traced demo
loads this module at start-up; it does something only in Snakemake script jobs
(``python .snakemake/scripts/tmpXXXX.<script>.py``) and only when KNEESYNTH_JOB_TRACE names the
folder for the records. It wraps ``__import__`` and ``importlib.import_module`` to add up the
process CPU time of outermost imports, wraps ``kneesynth.workflow.run_script`` to note the CPU
time at the call of the script's ``main``, and writes one JSON record per job at exit.
"""

import os
import sys

HEAVY_MODULES = ("torch", "torch._dynamo", "diffusers", "monai", "sklearn", "scipy.stats")

_TRACE_DIR = os.environ.get("KNEESYNTH_JOB_TRACE")
_SCRIPT = next((a for a in getattr(sys, "orig_argv", []) if "/.snakemake/scripts/" in a), None)
if _TRACE_DIR and _SCRIPT:
    import atexit
    import builtins
    import importlib
    import json
    import threading
    import time

    _main_thread = threading.get_ident()
    _state = {"depth": 0, "imports": 0.0, "to_main": None, "imports_at_main": None}

    def _timed(function):
        def wrapper(*args, **kwargs):
            if _state["depth"] or threading.get_ident() != _main_thread:
                _state["depth"] += 1
                try:
                    return function(*args, **kwargs)
                finally:
                    _state["depth"] -= 1
            _state["depth"] = 1
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                _state["depth"] = 0
                _state["imports"] += time.process_time() - start
                _patch_run_script()

        return wrapper

    def _patch_run_script():
        workflow = sys.modules.get("kneesynth.workflow")
        if workflow is None or getattr(workflow.run_script, "_traced", False):
            return
        original = workflow.run_script

        def run_script(main, snakemake):
            def traced_main(job):
                _state["to_main"] = time.process_time()
                _state["imports_at_main"] = _state["imports"]
                return main(job)

            return original(traced_main, snakemake)

        run_script._traced = True
        workflow.run_script = run_script

    def _record():
        cpu = time.process_time()
        job = getattr(sys.modules.get("__main__"), "snakemake", None)
        name = os.path.basename(_SCRIPT).split(".", 1)[-1]
        record = {
            "script": name,
            "rule": getattr(job, "rule", None),
            "wildcards": dict(getattr(job, "wildcards", {}) or {}),
            "cpu": cpu,
            "imports": _state["imports"],
            "to_main": _state["to_main"],
            "imports_in_main": None,
            "heavy": [m for m in HEAVY_MODULES if m in sys.modules],
            "kneesynth": getattr(sys.modules.get("kneesynth"), "__file__", None),
        }
        if _state["to_main"] is not None:
            record["imports_in_main"] = _state["imports"] - _state["imports_at_main"]
        path = os.path.join(_TRACE_DIR, f"{os.getpid()}.json")
        with open(path, "w") as handle:
            json.dump(record, handle)

    builtins.__import__ = _timed(builtins.__import__)
    importlib.import_module = _timed(importlib.import_module)
    atexit.register(_record)
