"""Start and stop the local Kafka-protocol broker (noida-db) for development and tests.

The binary is started directly (not through noida-db's Python wrapper) so the PID we hold
is the broker's own, and SIGTERM stops it cleanly (it saves its data on the way out).
Production runs Apache Kafka (docker-compose.yml or your cluster) instead.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def broker_binary() -> Path:
    import noida_db

    return Path(noida_db.__file__).parent / "noida-db"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited with code {process.returncode} before opening port {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"broker did not open port {port} within {timeout_s} s")


def start_broker(data_dir: Path, port: int, log_path: Path | None = None) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_path or data_dir / "broker.log", "ab")
    process = subprocess.Popen(
        [str(broker_binary()), "start", "--data-dir", str(data_dir), "--host", "127.0.0.1",
         "--only", "kafka", "--kafka-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, process)
    return process


def stop_broker(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start in the background; writes the PID file")
    start.add_argument("--data-dir", type=Path, default=Path("var/broker"))
    start.add_argument("--port", type=int, default=9092)
    stop = commands.add_parser("stop", help="stop the broker named in the PID file")
    stop.add_argument("--data-dir", type=Path, default=Path("var/broker"))
    args = parser.parse_args()
    pid_file = args.data_dir / "broker.pid"
    if args.command == "start":
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            print(f"broker already running (pid {pid_file.read_text().strip()})")
            return
        process = start_broker(args.data_dir, args.port)
        pid_file.write_text(str(process.pid))
        print(f"broker listening on 127.0.0.1:{args.port} (pid {process.pid}, data {args.data_dir})")
    else:
        if not pid_file.exists():
            print("no broker PID file; nothing to stop")
            return
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(500):
                if not _alive(pid):
                    break
                time.sleep(0.02)
        pid_file.unlink()
        print(f"broker (pid {pid}) stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
