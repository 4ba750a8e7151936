"""The host allocator switch (imdad_jax.io.host): applied on a CPU backend, refused for unknown modes, opt-out."""
import pytest

from imdad_jax.io import host


def test_allocator_switch_applies_on_cpu_and_can_be_turned_off(monkeypatch):
    if not host.set_malloc("default"):
        pytest.skip("no glibc mallopt on this system: the switch is a no-op here by design")
    try:
        assert host.tune_host_allocator() is True  # a CPU backend (conftest) with glibc
        monkeypatch.setenv("IMDAD_NO_MALLOC_TUNING", "1")
        assert host.tune_host_allocator() is False
    finally:
        assert host.set_malloc("default")  # glibc's defaults back for the rest of the suite
    with pytest.raises(ValueError, match="no_mmap"):
        host.set_malloc("huge")
