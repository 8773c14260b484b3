"""Regenerate the golden conntrackd outputs from OpenStack Neutron itself.

For every harouterd config in scenarios/*.conf this builds, per router that
gets a conntrackd.conf (ha_conntrackd_enabled, keepalived not false), the
ConntrackdManager Neutron's L3 agent builds (neutron/agent/l3/ha_router.py,
_init_conntrackd_manager) with Neutron's own neutron.agent.linux.conntrackd
module and Neutron's own option definitions (neutron.conf.agent.l3.ha), and
writes next to this script:

  <SCENARIO>.<ROUTER_ID>.conntrackd.conf   ConntrackdManager.build_config()
  <SCENARIO>.<ROUTER_ID>.error             what Neutron raised instead
  neutron_options.txt                      name, default and minimum of each
                                           ha_conntrackd_* option

The paths are taken in the order Neutron's output_config_file() takes them
(conntrackd.conf first, then build_config(): lock file, control socket), so
a router over two limits reports the one Neutron reports.

No Neutron code is copied here; it must be importable. Run it from a
throw-away virtualenv outside the repository:

  python3 -m venv /work/venv-neutron
  /work/venv-neutron/bin/pip install neutron==29.0.0
  /work/venv-neutron/bin/python tests/golden/conntrackd/neutron_oracle.py

ensure_tree (Neutron creates the router's directory while building a path)
is replaced by a no-op, so running this creates nothing outside this folder.
"""
import pathlib
import sys
import warnings

warnings.simplefilter('ignore')  # eventlet deprecation noise on import

from oslo_config import cfg  # noqa: E402

from neutron.agent.linux import conntrackd  # noqa: E402
from neutron.conf.agent.l3 import ha  # noqa: E402

conntrackd.ensure_tree = lambda *args, **kwargs: None

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from neutron_oracle import parse  # noqa: E402  the keepalived oracle's INI reader
SCENARIOS = HERE / 'scenarios'
TRUE = ('true', 'yes', 'on', '1')


def agent_conf(daemon):
    """Neutron's options with the scenario's [daemon] values set on them
    (oslo.config converts and range-checks them as Neutron would)."""
    conf = cfg.ConfigOpts()
    ha.register_l3_agent_ha_opts(conf)
    # harouterd's state_path default; Neutron's is /var/lib/neutron.
    conf.register_opt(cfg.StrOpt('state_path', default='/var/lib/harouterd'))
    for key, values in daemon.items():
        if key == 'state_path' or key in conf:
            conf.set_override(key, values[0])
    return conf


def build(rid, router, conf):
    manager = conntrackd.ConntrackdManager(
        rid, None, conf, router['ha_address'][0], int(router['vrid'][0]),
        router['ha_interface'][0], namespace=router.get('namespace', [None])[0])
    manager.get_conffile_path()  # output_config_file() takes it first
    return manager.build_config()


def options():
    conf = cfg.ConfigOpts()
    ha.register_l3_agent_ha_opts(conf)
    rows = []
    for opt in ha.OPTS:
        if opt.name.startswith('ha_conntrackd_'):
            low = getattr(opt.type, 'min', None)
            rows.append(f'{opt.name}\t{opt.default}\t{"-" if low is None else low}\n')
    return ''.join(rows)


def main():
    for old in HERE.glob('*.conntrackd.conf'):
        old.unlink()
    for old in HERE.glob('*.error'):
        old.unlink()
    (HERE / 'neutron_options.txt').write_text(options())
    for path in sorted(SCENARIOS.glob('*.conf')):
        sections = parse(path)
        daemon = sections.get('daemon', {})
        if daemon.get('ha_conntrackd_enabled', ['false'])[0].lower() not in TRUE:
            continue
        conf = agent_conf(daemon)
        for name, router in sections.items():
            if not name.startswith('router '):
                continue
            if router.get('keepalived', ['true'])[0].lower() not in TRUE:
                continue
            rid = name.split(None, 1)[1]
            base = HERE / f'{path.stem}.{rid}'
            try:
                text = build(rid, router, conf)
            except ValueError as exc:  # record what Neutron refused
                base.with_name(base.name + '.error').write_text(str(exc))
                print(f'{path.name} [{name}]: {exc}')
                continue
            base.with_name(base.name + '.conntrackd.conf').write_text(text)


if __name__ == '__main__':
    main()
