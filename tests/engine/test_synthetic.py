"""The synthetic model: numbered tokens on a fixed clock, without torch."""

from __future__ import annotations

import subprocess
import sys
import time

from streamhost.engine import Engine, EngineConfig, FinishReason, SamplingParams


async def test_synthetic_tokens_carry_their_sequence_numbers():
    engine = Engine.load(EngineConfig(model="synthetic:2"))
    try:
        start = time.perf_counter()
        events = [e async for e in engine.submit("a b c", SamplingParams(max_new_tokens=20))]
        elapsed = time.perf_counter() - start
        assert [e.text for e in events] == [f"{i} " for i in range(20)]
        assert events[-1].generated_text == "".join(f"{i} " for i in range(20))
        assert events[-1].finish_reason is FinishReason.LENGTH
        assert events[-1].input_length == 3
        assert elapsed >= 0.040  # 20 tokens, 2 ms apart
    finally:
        engine.shutdown()


def test_synthetic_engine_never_imports_torch():
    code = (
        "import asyncio, sys\n"
        "sys.modules['torch'] = None\n"  # any import of torch now fails
        "from streamhost.engine import Engine, EngineConfig, SamplingParams\n"
        "async def main():\n"
        "    e = Engine.load(EngineConfig(model='synthetic:1'))\n"
        "    out = [x.text async for x in e.submit('hi', SamplingParams(max_new_tokens=3))]\n"
        "    e.shutdown()\n"
        "    print(''.join(out))\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0 1 2"
