import pytest

from stackservice import cli
from stackservice.config import InstanceConfig


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


def test_config_workers_other_than_one_refused_clearly():
    assert InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", workers="1")
    with pytest.raises(ValueError, match="--workers"):
        InstanceConfig.build(iface="vfpf0v0", ip="198.18.0.10/24", workers="2")
