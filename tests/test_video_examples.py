"""The five usage examples of transformers' SAM2 Video documentation (docs/video_examples.md) run on the packaged
model in bfloat16 and print what the documentation prints (shapes as tuples)."""

import contextlib
import io
import re
import time
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "video_examples.md"


def test_examples_print_the_documented_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)
    assert len(blocks) == 6  # the five examples, then models from a config and the session's state
    namespace = {"__name__": "video_examples"}
    timings = []
    for i, block in enumerate(blocks):
        expected = [line.split("# prints: ", 1)[1] for line in block.splitlines() if "# prints: " in line]
        printed = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, f"video_examples.md example {i + 1}", "exec"), namespace)
        timings.append(time.perf_counter() - start)
        assert printed.getvalue().splitlines() == expected, f"example {i + 1}"
    print("VIDEO EXAMPLES seconds: " + ", ".join(f"{t:.1f}" for t in timings) + f"; total {sum(timings):.1f}")
