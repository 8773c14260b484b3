"""Start, watch and stop harouterd's drop-in monitor with Neutron's own
ProcessManager (neutron/agent/linux/external_process.py), both ways Neutron
starts it:

  async_process=False  the blocking execute of every release up to 28
                       (enable() returns when the command has exited and its
                       stdout/stderr reached EOF; then the pid file is read)
  async_process=True   Neutron 29+ (an async child with pipes never read)

For each: enable() must return at once, pm.pid must name the running
monitor and pm.active be true (the uuid "ROUTER.monitor" in its cmdline),
the initial state and a VIP flip must reach a Unix-socket receiver, and
pm.disable(sig='15') must stop it (pm.active false).

No Neutron code is copied; it must be importable. As root, from a
throw-away virtualenv with neutron installed (29.0.0 was used):

  python3 -m venv /tmp/nvenv && /tmp/nvenv/bin/pip install neutron
  cargo build && /tmp/nvenv/bin/python tests/neutron_process_manager.py target/debug/harouterd

run_as_root=False: the script is root already, so no root helper is needed
(with it, rootwrap would sit between the agent and the monitor, which
changes nothing here: it too waits for the command to exit).
"""
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings

warnings.simplefilter('ignore')  # eventlet deprecation noise on import

from oslo_config import cfg  # noqa: E402

from neutron.agent.linux import external_process  # noqa: E402

SERVICE = 'neutron-keepalived-state-change-monitor'  # ha_router.py
VIP = '169.254.0.1/24'


class Receiver:
    """The agent's keepalived-state-change socket: records X-Neutron-State."""

    def __init__(self, path):
        self.states, self.cv = [], threading.Condition()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(16)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.sock.accept()
            data = b''
            while b'\r\n\r\n' not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            state = [line.split(b':', 1)[1].strip().decode() for line in data.split(b'\r\n')
                     if line.lower().startswith(b'x-neutron-state:')]
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
            conn.close()
            with self.cv:
                self.states += state
                self.cv.notify_all()

    def wait(self, count, timeout=5.0):
        end = time.monotonic() + timeout
        with self.cv:
            while len(self.states) < count and time.monotonic() < end:
                self.cv.wait(0.05)
            return list(self.states)


def ip(*args):
    subprocess.run(['ip', *args], check=True)


def run(binary, async_process):
    base = pathlib.Path(tempfile.mkdtemp(prefix='hrt-npm-'))
    ns = f'hrt-npm-{os.getpid()}-{int(async_process)}'
    ip('netns', 'add', ns)
    try:
        ip('-n', ns, 'link', 'add', 'ha-a', 'type', 'veth', 'peer', 'name', 'ha-b')
        ip('-n', ns, 'link', 'set', 'ha-a', 'up')
        conf_dir = base / 'ha_confs' / 'r1'
        conf_dir.mkdir(parents=True)
        link = base / 'neutron-keepalived-state-change'
        link.symlink_to(pathlib.Path(binary).resolve())
        receiver = Receiver(str(base / 'keepalived-state-change'))
        cfg.CONF.set_override('external_pids', str(base / 'external' / 'pids'))

        def callback(pid_file):
            # ha_router.py _get_state_change_monitor_callback, 29.0.0.
            return [str(link), '--router_id', 'r1', '--namespace', ns, '--conf_dir', str(conf_dir),
                    '--log-file', str(conf_dir / 'neutron-keepalived-state-change.log'),
                    '--monitor_interface', 'ha-a', '--monitor_cidr', VIP, '--pid_file', pid_file,
                    '--state_path', str(base), '--user', str(os.geteuid()), '--group', str(os.getegid())]

        pm = external_process.ProcessManager(cfg.CONF, 'r1.monitor', namespace=None, service=SERVICE,
                                             default_cmd_callback=callback, run_as_root=False,
                                             async_process=async_process)
        started = time.monotonic()
        pm.enable()
        took = time.monotonic() - started
        name = 'async (Neutron 29+)' if async_process else 'blocking (Neutron <= 28)'
        # Neutron 29 reads pm.pid right after enable() too (and only warns
        # "might still be spawning" when it is not there yet).
        deadline = time.monotonic() + 5
        while not pm.active and time.monotonic() < deadline:
            time.sleep(0.01)
        print(f'{name}: enable() returned in {took * 1000:.1f} ms; pid {pm.pid}, active {pm.active}, '
              f'cmdline {pm.cmdline!r}')
        assert took < 3, f'enable() took {took:.1f} s'
        assert pm.active, 'ProcessManager does not see the monitor'
        assert receiver.wait(1) == ['backup'], receiver.states
        ip('-n', ns, 'addr', 'add', VIP, 'dev', 'ha-a')
        assert receiver.wait(2) == ['backup', 'primary'], receiver.states
        pid = pm.pid
        pm.disable(sig='15')
        deadline = time.monotonic() + 5
        while pm.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pm.active, f'monitor {pid} still active after SIGTERM'
        print(f'{name}: reports {receiver.states}; disable(sig=15) stopped pid {pid}: ok')
        if async_process:
            print(f'{name}: the process the agent started exited {pm._process.wait(timeout=5)}')
    finally:
        ip('netns', 'del', ns)
        subprocess.run(['rm', '-rf', str(base)], check=False)


def main():
    cfg.CONF([], project='neutron')
    binary = sys.argv[1] if len(sys.argv) > 1 else 'target/debug/harouterd'
    run(binary, async_process=False)
    run(binary, async_process=True)


if __name__ == '__main__':
    main()
