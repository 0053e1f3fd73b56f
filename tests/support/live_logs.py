"""Reading the JSON Lines logs a running server is still appending to."""
from __future__ import annotations

import json
from pathlib import Path


def complete_records(path: Path) -> list[dict]:
    """The records of `path` whose newline is written: a read that races the server's append may
    catch the last batch half written, and that fragment is not a record yet."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]
