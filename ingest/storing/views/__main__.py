"""``python -m ingest.storing.views [--check]``: write (or check) the generated migration (``TARGET``)."""

import sys

from ingest.storing.views import render, target

text = render()
if "--check" in sys.argv:
    sys.exit(0 if target().read_text() == text else f"{target()} is not what the templates render")
target().write_text(text)
print(f"wrote {target()}")
