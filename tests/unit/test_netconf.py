"""The sysctls that keep the kernel off a stack's interface: written only
when they differ, so a stack starts where /proc/sys is read-only (a
Kubernetes pod) once something else set them, and says which one is wrong
when nothing did."""

from __future__ import annotations

import errno

import pytest

from stackservice.nic import netconf


class FakeProcSys:
    """/proc/sys as a dict; `read_only` refuses every write like a
    container's read-only mount."""

    def __init__(self, values: dict[str, int], read_only: bool = False) -> None:
        self.values = values
        self.read_only = read_only
        self.writes: list[tuple[str, int]] = []

    def read(self, key: str) -> int:
        return self.values[key]

    def write(self, key: str, value: int) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "Read-only file system")
        self.writes.append((key, value))
        self.values[key] = value


@pytest.fixture
def proc_sys(monkeypatch):
    def install(values: dict[str, int], read_only: bool = False) -> FakeProcSys:
        fake = FakeProcSys(values, read_only)
        monkeypatch.setattr(netconf, "read_sysctl", fake.read)
        monkeypatch.setattr(netconf, "write_sysctl", fake.write)
        return fake

    return install


def keys(ifname: str, value_of=lambda wanted: wanted) -> dict[str, int]:
    return {key.format(ifname): value_of(wanted) for key, wanted in netconf.SILENCE_SYSCTLS}


def test_silence_kernel_writes_each_sysctl_that_differs(proc_sys):
    fake = proc_sys(keys("vf0", lambda wanted: wanted + 1))
    netconf.silence_kernel("vf0")
    assert fake.writes == [(key.format("vf0"), wanted) for key, wanted in netconf.SILENCE_SYSCTLS]


def test_silence_kernel_on_read_only_proc_sys_already_set_writes_nothing(proc_sys):
    fake = proc_sys(keys("vf0"), read_only=True)
    netconf.silence_kernel("vf0")
    assert fake.writes == []


def test_silence_kernel_on_read_only_proc_sys_names_the_wrong_sysctl(proc_sys):
    values = keys("vf0")
    values["net/ipv4/conf/vf0/forwarding"] = 1  # a node with forwarding on, inherited
    proc_sys(values, read_only=True)
    with pytest.raises(OSError) as caught:
        netconf.silence_kernel("vf0")
    assert caught.value.errno == errno.EROFS
    assert "/proc/sys/net/ipv4/conf/vf0/forwarding must be 0" in str(caught.value)
    assert "tuning plugin" in str(caught.value)


def test_ensure_sysctl_passes_other_errors_through(monkeypatch):
    monkeypatch.setattr(netconf, "read_sysctl", lambda key: 0)

    def gone(key, value):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(netconf, "write_sysctl", gone)
    with pytest.raises(FileNotFoundError):
        netconf.ensure_sysctl("net/ipv4/conf/vf0/arp_ignore", 8)


def test_ensure_sysctl_returns_whether_it_wrote(proc_sys):
    proc_sys({"net/ipv4/conf/vf0/arp_ignore": 0})
    assert netconf.ensure_sysctl("net/ipv4/conf/vf0/arp_ignore", 8) is True
    assert netconf.ensure_sysctl("net/ipv4/conf/vf0/arp_ignore", 8) is False
