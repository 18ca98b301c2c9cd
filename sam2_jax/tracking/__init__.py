"""The pure tracking core: the fixed-shape memory bank and its jitted step (`tracker`), the memory plan
(`plan`), one program per video (`functional.propagate`) and its sharding over devices (`sharding`)."""
