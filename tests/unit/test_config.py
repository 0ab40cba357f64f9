import os

import pytest

from stackservice import cli
from stackservice.config import InstanceConfig, choose_iface


def test_config_valid_flags_build_instance_config():
    config = InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", gateway="198.18.0.1")
    assert str(config.address) == "198.18.0.10/24"
    assert str(config.gateway) == "198.18.0.1"
    assert config.name == "vfpf0v0"


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"ip": "198.18.0.10"}, "--ip"),
        ({"ip": "198.18.0.300/24"}, "--ip"),
        ({"ip": "198.18.0.0/24"}, "--ip"),
        ({"ip": "198.18.0.255/24"}, "--ip"),
        ({"gateway": "10.0.0.1"}, "--gateway"),
        ({"gateway": "nope"}, "--gateway"),
        ({"mac": "01:00:5e:00:00:01"}, "--mac"),
        ({"mac": "02:00:00:00:10"}, "--mac"),
        ({"name": "../etc"}, "--name"),
        ({"iface": "a" * 16}, "--iface"),
    ],
)
def test_config_bad_flag_error_names_the_flag(kwargs, flag):
    args = {"iface": "vfpf0v0", "ip": "198.18.0.10/24", **kwargs}
    with pytest.raises(ValueError, match=flag):
        InstanceConfig.build(**args)


def test_cli_environment_supplies_required_flags(monkeypatch):
    monkeypatch.setenv("VFSTACK_IFACE", "vfpf0v1")
    monkeypatch.setenv("VFSTACK_IP", "198.18.0.11/24")
    args = cli.build_parser().parse_args(["run"])
    assert (args.iface, args.ip) == ("vfpf0v1", "198.18.0.11/24")


def test_cli_flag_wins_over_environment(monkeypatch):
    monkeypatch.setenv("VFSTACK_IFACE", "vfpf0v1")
    args = cli.build_parser().parse_args(["run", "--iface", "vfpf0v0", "--ip", "198.18.0.10/24"])
    assert args.iface == "vfpf0v0"


def test_cli_bad_flag_exits_2_with_one_line(capsys):
    assert cli.main(["run", "--iface", "vfpf0v0", "--ip", "198.18.0.10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ip" in err


@pytest.mark.parametrize("value", ["-1", "10001", "fast"])
def test_config_busy_poll_out_of_range_rejected(value):
    with pytest.raises(ValueError, match="--busy-poll-us"):
        InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", busy_poll_us=value)


def test_cli_busy_poll_from_environment(monkeypatch):
    monkeypatch.setenv("VFSTACK_BUSY_POLL_US", "0")
    args = cli.build_parser().parse_args(["run", "--iface", "vfpf0v0", "--ip", "198.18.0.10/24"])
    assert (
        InstanceConfig.build(
            iface=args.iface, ip=args.ip, busy_poll_us=args.busy_poll_us
        ).busy_poll_us
        == 0
    )


def test_config_tcp_settings_from_flags():
    config = InstanceConfig.build(
        iface="vfpf0v0", ip="198.18.0.10/24", congestion_control="newreno", time_wait_ms="500"
    )
    assert config.tcp.congestion_control == "newreno"
    assert config.tcp.time_wait_us == 500_000


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [({"congestion_control": "bbr"}, "--congestion-control"), ({"time_wait_ms": "-1"}, "--time")],
)
def test_config_bad_tcp_flag_names_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"metrics_port": "0"}, "--metrics-port"),
        ({"metrics_port": "http"}, "--metrics-port"),
        ({"metrics_port": "9100", "control": "none"}, "--metrics-port"),
        ({"control": "unix:relative.sock"}, "--control"),
        ({"control_tcp": "nohost"}, "--control-tcp"),
    ],
)
def test_config_bad_control_or_metrics_flag_names_it(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", **kwargs)


def test_config_control_defaults_to_run_dir_socket():
    config = InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", run_dir="/run/x")
    assert str(config.control) == "/run/x/vfpf0v0.sock"
    assert config.metrics_port is None


def test_config_workers_and_cpus_checked_clearly():
    base = {"iface": "vfpf0v0", "ip": "198.18.0.10/24"}
    assert InstanceConfig.build(**base).workers == 1
    assert InstanceConfig.build(**base, workers="2").workers == 2
    for bad in ("0", "65", "two", "-1"):
        with pytest.raises(ValueError, match="--workers"):
            InstanceConfig.build(**base, workers=bad)
    cpus = sorted(os.sched_getaffinity(0))
    given = ",".join(map(str, reversed(cpus)))
    assert InstanceConfig.build(**base, workers="2", cpus=given).cpus == tuple(reversed(cpus))
    for bad in ("4096", "0,0", "a"):
        with pytest.raises(ValueError, match="--cpus"):
            InstanceConfig.build(**base, cpus=bad)


# --- The VF identity instead of --iface: --pf PF --vf INDEX --------------------


def _no_resolve(pf: str, vf: int) -> str:
    raise AssertionError("resolve must not be called")


@pytest.mark.parametrize(
    ("iface", "pf", "vf", "message"),
    [
        (None, None, None, "give --iface, or --pf and --vf"),
        ("vfpf0v0", "ens1f0", "3", "either --iface or --pf with --vf, not both"),
        ("vfpf0v0", None, "3", "not both"),
        (None, "ens1f0", None, "--pf and --vf go together"),
        (None, None, "3", "--pf and --vf go together"),
        (None, "ens1f0", "three", "--vf: give a VF index"),
        (None, "ens1f0", "-1", "--vf: give a VF index"),
        (None, "a" * 16, "1", "--pf: not an interface name"),
    ],
)
def test_choose_iface_needs_exactly_one_way(iface, pf, vf, message):
    with pytest.raises(ValueError, match=message):
        choose_iface(iface, pf, vf, _no_resolve)


def test_choose_iface_iface_alone_is_used_as_given():
    assert choose_iface("vfpf0v1", None, None, _no_resolve) == "vfpf0v1"


def test_choose_iface_pf_and_vf_resolve_to_the_vf_netdev():
    asked = []

    def resolve(pf: str, vf: int) -> str:
        asked.append((pf, vf))
        return f"{pf}v{vf}"

    assert choose_iface(None, "ens1f0", " 3", resolve) == "ens1f0v3"
    assert asked == [("ens1f0", 3)]


def test_choose_iface_resolve_error_names_the_flags():
    def resolve(pf: str, vf: int) -> str:
        raise ValueError("ens1f0 has 2 VFs (0..1); no VF 3")

    with pytest.raises(ValueError, match=r"--pf ens1f0 --vf 3: ens1f0 has 2 VFs"):
        choose_iface(None, "ens1f0", "3", resolve)


def test_cli_pf_and_vf_from_environment(monkeypatch):
    monkeypatch.setenv("VFSTACK_PF", "ens1f0")
    monkeypatch.setenv("VFSTACK_VF", "2")
    args = cli.build_parser().parse_args(["run", "--ip", "198.18.0.10/24"])
    assert (args.iface, args.pf, args.vf) == (None, "ens1f0", "2")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give --iface, or --pf and --vf"),
        (["--iface", "vfpf0v0", "--pf", "vfpf0", "--vf", "0"], "not both"),
        (["--pf", "vfpf0"], "--pf and --vf go together"),
        (["--pf", "vftnone0", "--vf", "0"], "no such interface: vftnone0"),
    ],
)
def test_cli_interface_choice_error_exits_2_with_one_line(capsys, monkeypatch, argv, message):
    for name in ("VFSTACK_IFACE", "VFSTACK_PF", "VFSTACK_VF"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["run", "--ip", "198.18.0.10/24", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_pf_and_vf_run_the_instance_on_the_netdev_sysfs_names(monkeypatch):
    """--pf/--vf ask the resolver (sysfs, stackservice.nic.sriov) for VF 3
    of vfpf0 and run the instance, named after it, on the netdev it names."""
    import stackservice.instance

    asked, started = [], []

    def resolve(pf: str, vf: int) -> str:
        asked.append((pf, vf))
        return "enp3s0f0v3"  # what sysfs would say: not derived from the flags

    monkeypatch.setattr(cli, "_vf_netdev", resolve)
    monkeypatch.setattr(stackservice.instance, "run_instance", lambda c: started.append(c) or 0)
    assert cli.main(["run", "--ip", "198.18.0.13/24", "--pf", "vfpf0", "--vf", "3"]) == 0
    assert asked == [("vfpf0", 3)]
    assert [(c.iface, c.name) for c in started] == [("enp3s0f0v3", "enp3s0f0v3")]


def test_config_app_group_by_number_or_name():
    base = {"iface": "vfpf0v0", "ip": "198.18.0.10/24"}
    assert InstanceConfig.build(**base).app_group is None  # root only
    assert InstanceConfig.build(**base, app_group="10001").app_group == 10001
    assert InstanceConfig.build(**base, app_group="root").app_group == 0
    with pytest.raises(ValueError, match="--app-group: no group named 'no-such-group'"):
        InstanceConfig.build(**base, app_group="no-such-group")


def test_cli_app_group_from_environment(monkeypatch):
    monkeypatch.setenv("VFSTACK_APP_GROUP", "4242")
    args = cli.build_parser().parse_args(["run", "--iface", "x", "--ip", "198.18.0.10/24"])
    assert args.app_group == "4242"


def test_cli_strict_from_environment_and_the_command_line_wins(monkeypatch):
    """Every flag reads VFSTACK_<FLAG>; --no-strict overrides the suite's VFSTACK_STRICT=1."""

    def parse(argv: list[str]):  # defaults are read from the environment then
        return cli.build_parser().parse_args(argv)

    monkeypatch.setenv("VFSTACK_STRICT", "1")
    assert parse(["run", "--ip", "198.18.0.10/24"]).strict is True
    assert parse(["run", "--ip", "198.18.0.10/24", "--no-strict"]).strict is False
    monkeypatch.delenv("VFSTACK_STRICT")
    assert parse(["run", "--ip", "198.18.0.10/24"]).strict is False  # contain: never down
    assert parse(["run", "--ip", "198.18.0.10/24", "--strict"]).strict is True
    config = InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", strict=True)
    assert config.strict and not InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24").strict


def test_config_shared_memory_limits_in_mib_per_instance_and_per_app():
    base = {"iface": "vfpf0v0", "ip": "198.18.0.10/24"}
    limits = InstanceConfig.build(**base).limits
    assert (limits.shm_bytes, limits.app_shm_bytes) == (1024 << 20, 256 << 20)
    limits = InstanceConfig.build(**base, shm_limit_mib="64", app_shm_limit_mib=16).limits
    assert (limits.shm_bytes, limits.app_shm_bytes) == (64 << 20, 16 << 20)
    for kwargs, flag in (
        ({"shm_limit_mib": "0"}, "--shm-limit-mib"),
        ({"app_shm_limit_mib": "lots"}, "--app-shm-limit-mib"),
        ({"shm_limit_mib": "8", "app_shm_limit_mib": "16"}, "--app-shm-limit-mib"),
    ):
        with pytest.raises(ValueError, match=flag):
            InstanceConfig.build(**base, **kwargs)


def test_config_session_limits_and_the_attach_timeout():
    base = {"iface": "vfpf0v0", "ip": "198.18.0.10/24"}
    limits = InstanceConfig.build(**base).limits
    assert (limits.sessions, limits.app_sessions, limits.attach_timeout_ms) == (64, 16, 2000)
    limits = InstanceConfig.build(
        **base, max_sessions="8", max_app_sessions="2", attach_timeout_ms="500"
    ).limits
    assert (limits.sessions, limits.app_sessions, limits.attach_timeout_ms) == (8, 2, 500)
    for kwargs, flag in (
        ({"max_sessions": "0"}, "--max-sessions"),
        ({"max_sessions": "4", "max_app_sessions": "8"}, "--max-app-sessions"),
        ({"attach_timeout_ms": "-1"}, "--attach-timeout-ms"),
    ):
        with pytest.raises(ValueError, match=flag):
            InstanceConfig.build(**base, **kwargs)


def test_config_metrics_listen_on_loopback_unless_told():
    base = {"iface": "vfpf0v0", "ip": "198.18.0.10/24", "metrics_port": 9100}
    assert InstanceConfig.build(**base).metrics_address == "127.0.0.1"
    assert InstanceConfig.build(**base, metrics_address="0.0.0.0").metrics_address == "0.0.0.0"
    assert InstanceConfig.build(**base, metrics_address="::1").metrics_address == "::1"
    with pytest.raises(ValueError, match="--metrics-address"):
        InstanceConfig.build(**base, metrics_address="localhost")


def test_config_port_policy_flags():
    base = {"iface": "vfpf0v0", "ip": "198.18.0.10/24"}
    limits = InstanceConfig.build(**base).limits
    assert (limits.privileged_port_uids, limits.port_reserve_ms) == (frozenset(), 10_000)
    limits = InstanceConfig.build(
        **base, privileged_port_uids="10001, 10003", port_reserve_ms="0"
    ).limits
    assert (limits.privileged_port_uids, limits.port_reserve_ms) == ({10001, 10003}, 0)
    with pytest.raises(ValueError, match="--privileged-port-uids"):
        InstanceConfig.build(**base, privileged_port_uids="web")


def test_tcp_memory_sets_the_engines_buffer_memory_and_is_at_least_a_sockets_buffer():
    config = InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", tcp_memory_mib="64")
    assert config.tcp.buffer_memory == 64 << 20
    for bad in ("0", "3", "x"):
        with pytest.raises(ValueError, match="--tcp-memory-mib"):
            InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", tcp_memory_mib=bad)
