"""Regenerate the golden keepalived outputs from OpenStack Neutron itself.

For every scenario in tests/scenarios/*.conf this builds, per router, the
objects Neutron's L3 agent builds (neutron/agent/l3/ha_router.py,
_init_keepalived_manager) with Neutron's own neutron.agent.linux.keepalived
module, and writes next to this script:

  <SCENARIO>.<ROUTER_ID>.keepalived.conf   KeepalivedConf.get_config_str()
  <SCENARIO>.<ROUTER_ID>.check.sh          the health-check script, only when
                                           Neutron would write one

No Neutron code is copied here; it must be importable. Run it from a
throw-away virtualenv outside the repository:

  python3 -m venv /tmp/nvenv && /tmp/nvenv/bin/pip install neutron
  /tmp/nvenv/bin/python tests/golden/neutron_oracle.py

Assumes keepalived supports no_track (keepalived >= 2.0.11; we target 2.2.7).
unicast_src_ip / unicast_peer have no Neutron equivalent and are ignored.
"""
import pathlib
import warnings

warnings.simplefilter('ignore')  # eventlet deprecation noise on import

from neutron.agent.linux import keepalived  # noqa: E402

keepalived._IS_NO_TRACK_SUPPORTED = True

HERE = pathlib.Path(__file__).resolve().parent
SCENARIOS = HERE.parent / 'scenarios'
DEFAULT_ROUTES = ('0.0.0.0/0', '::/0')


def parse(path):
    """harouterd INI: [daemon], [router ID]; repeated keys become lists."""
    sections, current = {}, None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in '#;':
            continue
        if line.startswith('['):
            current = sections.setdefault(line[1:-1].strip(), {})
            continue
        key, _, value = line.partition('=')
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def words(spec):
    """'DEST via NH dev IF scope S' -> ('DEST', {'via': NH, ...})."""
    head, *rest = spec.split()
    return head, dict(zip(rest[0::2], rest[1::2]))


def build(rid, router, daemon):
    def opt(key, daemon_key=None, default=None):
        if key in router:
            return router[key][0]
        if daemon_key and daemon_key in daemon:
            return daemon[daemon_key][0]
        return default

    ha_confs = daemon['state_path'][0] + '/ha_confs'
    conf = keepalived.KeepalivedConf()
    conf_dir = keepalived.KeepalivedManager(
        rid, conf, None, conf_path=ha_confs).get_conf_dir()
    ha_if = router['ha_interface'][0]
    mcast = opt('mcast_src_ip')
    instance = keepalived.KeepalivedInstance(
        'BACKUP', ha_if, int(router['vrid'][0]), [router['ha_cidr'][0]],
        priority=int(opt('priority', default=50)),
        advert_int=int(opt('advert_int', 'ha_vrrp_advert_int', 2)),
        mcast_src_ip=mcast, nopreempt=True,
        vrrp_health_check_interval=int(opt(
            'health_check_interval', 'ha_vrrp_health_check_interval', 0)),
        ha_conf_dir=conf_dir,
        vrrp_auth_type=opt('auth_type', 'ha_vrrp_auth_type', 'PASS'),
        vrrp_auth_password=opt('auth_password', 'ha_vrrp_auth_password'))
    instance.track_interfaces = [ha_if] + router.get('track_interface', [])
    for spec in router.get('vip', []):
        cidr, kw = words(spec)
        instance.add_vip(cidr, kw['dev'], kw.get('scope'))
    routes = instance.virtual_routes
    for spec in router.get('route', []):
        dest, kw = words(spec)
        route = keepalived.KeepalivedVirtualRoute(
            dest, kw.get('via'), kw.get('dev'), scope=kw.get('scope'))
        if dest in DEFAULT_ROUTES:
            routes.gateway_routes.append(route)
        elif 'via' in kw:
            routes.extra_routes.append(route)
        else:
            routes.extra_subnets.append(route)
    conf.add_instance(instance)
    config = conf.get_config_str()  # also hands routes/vips to track_script
    script = instance.track_script
    if script is not None and script._is_needed():
        return config, script._get_script_str()
    return config, None


def main():
    for path in sorted(SCENARIOS.glob('*.conf')):
        sections = parse(path)
        daemon = sections.get('daemon', {})
        for name, router in sections.items():
            if not name.startswith('router '):
                continue
            rid = name.split(None, 1)[1]
            base = HERE / f'{path.stem}.{rid}'
            check = base.with_name(base.name + '.check.sh')
            try:
                config, script = build(rid, router, daemon)
            except Exception as exc:  # record what Neutron raised
                config, script = f'{type(exc).__name__}: {exc}', None
                print(f'{path.name} [{name}]: {config}')
            base.with_name(base.name + '.keepalived.conf').write_text(config)
            if script is None:
                check.unlink(missing_ok=True)
            else:
                check.write_text(script)


if __name__ == '__main__':
    main()
