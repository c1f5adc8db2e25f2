"""A resumable list of named stages: one line per stage with elapsed time, failures kept apart.

Each finished stage is recorded in ``OUT/status.json`` (written atomically), so an interrupted demo re-run
skips what is done. A stage that raises is marked failed with its message (full traceback in
``OUT/logs/STAGE.log``, removed once the stage succeeds); stages that need it are skipped, all others still
run. Before anything runs, :meth:`StageRunner.check` imports what each pending stage ``requires``, so a
missing package shows in seconds rather than after minutes of training.
"""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ngfx.io import atomic_write, read_json, write_json


@dataclass
class Stage:
    name: str
    run: Callable[[], dict]  # does the work, returns a small JSON-able summary
    needs: tuple[str, ...] = ()
    describe: Callable[[dict], str] = field(default=lambda info: "")
    requires: tuple[str, ...] = ()  # modules it imports: checked up front


class StageRunner:
    def __init__(self, out_dir: Path, printer: Callable[[str], None] = print):
        self.out_dir = Path(out_dir)
        self.status_path = self.out_dir / "status.json"
        self.status: dict[str, dict] = read_json(self.status_path) if self.status_path.is_file() else {}
        self.print = printer

    def state(self, name: str) -> str:
        return self.status.get(name, {}).get("state", "pending")

    def check(self, stages: list[Stage]) -> list[str]:
        """Import what each stage still to run requires -> one line per problem (empty: all import)."""
        problems, seen = [], {}
        for stage in stages:
            if self.state(stage.name) == "done":
                continue
            for module in stage.requires:
                if module not in seen:
                    try:
                        importlib.import_module(module)
                        seen[module] = None
                    except Exception as e:  # ImportError, or a module failing at import time
                        seen[module] = f"{type(e).__name__}: {e}"
                if seen[module]:
                    problems.append(f"{stage.name}: cannot import {module} ({seen[module]})")
        return problems

    def run_all(self, stages: list[Stage]) -> dict[str, dict]:
        width = max(len(s.name) for s in stages)
        for i, stage in enumerate(stages, 1):
            head = f"[{i:2d}/{len(stages)}] {stage.name:<{width}}"
            if self.state(stage.name) == "done":
                self.print(f"{head}  done earlier ({self.status[stage.name]['seconds']:.1f} s), kept")
                continue
            missing = [n for n in stage.needs if self.state(n) != "done"]
            if missing:
                self._record(stage.name, {"state": "skipped", "reason": f"needs {', '.join(missing)}", "seconds": 0.0})
                self.print(f"{head}  skipped: needs {', '.join(missing)}")
                continue
            self.print(f"{head}  running ...")
            start = time.perf_counter()
            try:
                info = stage.run() or {}
            except Exception as e:  # one stage's failure must not lose the others' results
                seconds = time.perf_counter() - start
                log = self.out_dir / "logs" / f"{stage.name}.log"
                with atomic_write(log, "w") as f:
                    f.write(traceback.format_exc())
                self._record(stage.name, {"state": "failed", "error": f"{type(e).__name__}: {e}", "seconds": seconds,
                                          "log": str(log.relative_to(self.out_dir))})
                self.print(f"{head}  FAILED after {seconds:.1f} s: {type(e).__name__}: {e} (see {log})")
                continue
            seconds = time.perf_counter() - start
            (self.out_dir / "logs" / f"{stage.name}.log").unlink(missing_ok=True)  # an earlier failure's
            self._record(stage.name, {"state": "done", "seconds": seconds, "info": info})
            detail = stage.describe(info)
            self.print(f"{head}  done in {seconds:.1f} s" + (f"  {detail}" if detail else ""))
        return self.status

    def _record(self, name: str, entry: dict) -> None:
        self.status[name] = entry
        write_json(self.status_path, self.status)
