"""Best-effort memos under $DDBENCH_HOME/cache: a JSON dict of answers that are slow to work out
again (file hashes, PNG sizes). A read-only home, or another process writing the same memo at
once, only loses entries, never an answer."""

from __future__ import annotations

import json
import os
from typing import Any

from ddbench.core import paths


class JsonMemo:
    """`$DDBENCH_HOME/cache/<kind>/<name>`, read once; `save` writes it back if anything was added."""

    def __init__(self, kind: str, name: str) -> None:
        self.path = paths.cache_dir(kind) / name
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            entries = {}
        self.entries: dict[str, Any] = entries if isinstance(entries, dict) else {}
        self._changed = False

    def get(self, key: str) -> Any:
        return self.entries.get(key)

    def put(self, key: str, value: Any) -> None:
        self.entries[key] = value
        self._changed = True

    def save(self) -> None:
        if not self._changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self.entries))
            os.replace(temporary, self.path)
            self._changed = False
        except OSError:
            pass
