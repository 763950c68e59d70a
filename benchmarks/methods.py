"""Method names used by the benchmarks: an ``initialize`` method, optionally with the relay structure
(``"spike_aware:relay"``, ``"calibrated:relay"``: ``relay=`` passed to spike_aware or to calibrated's start)."""


def split_method(name, relay=0.9):
    """``"calibrated:relay"`` -> ``("calibrated", {"relay": relay})``; ``"ikun"`` -> ``("ikun", {})``."""
    method, _, structure = name.partition(":")
    if structure == "relay":
        return method, {"relay": relay}
    if structure:
        raise SystemExit(f"unknown structure {structure!r} in {name!r} (only ':relay')")
    return method, {}
