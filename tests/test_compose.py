"""docker-compose.yml is a valid Compose file, checked by Compose itself: ``docker compose
config`` where Docker is installed, else docker-compose 1.29 (Compose's Python
implementation, which validates against the Compose schema the same way), installed by
infra/test.sh into ``.venv-compose``."""
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compose_command() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return [str(REPO / ".venv-compose" / "bin" / "docker-compose")]


COMPOSE = compose_command()


def compose_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*COMPOSE, "-f", str(path), "config", "-q"], cwd=path.parent, capture_output=True,
                          text=True, timeout=120)


def test_the_compose_file_is_valid():
    result = compose_config(REPO / "docker-compose.yml")
    assert result.returncode == 0, result.stderr


def test_the_check_rejects_an_invalid_compose_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((REPO / "docker-compose.yml").read_text().replace("services:", "services:\n  typo:\n    imag: x", 1))
    result = compose_config(broken)
    assert result.returncode != 0 and "imag" in result.stderr, result.stderr
