"""`indico-supervisor build-image`: the engine builds, progress streams, mistakes exit 2.

Builds tiny contexts `FROM` the local busybox test image (no registry), through the
real CLI; every image a test tags is removed after it.
"""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import docker.errors
import pytest

from supervisor.build import DEFAULT_TAG, default_tag

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tag(docker_client):
    made = f"indico-supervisor-test/build:{uuid.uuid4().hex[:12]}"
    yield made
    try:
        docker_client.images.remove(made)
    except docker.errors.ImageNotFound:
        pass


def context(tmp_path: Path, dockerfile: str) -> Path:
    directory = tmp_path / "context"
    directory.mkdir()
    (directory / "Dockerfile").write_text(dockerfile)
    return directory


def build_args(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", "build-image", "--config", str(tmp_path / "absent.yaml"), *args]


def run_build(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(build_args(tmp_path, *args), capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_build_streams_progress_tags_the_image_and_passes_build_args(tmp_path, busybox, tag, docker_client):
    word = uuid.uuid4().hex[:8]
    ctx = context(tmp_path, f"FROM {busybox}\nARG GREETING=unset\n"
                            'RUN echo "greeting=$GREETING" && sleep 1 && echo "$GREETING" > /greeting && echo second\n')
    process = subprocess.Popen(build_args(tmp_path, "--context", str(ctx), "--tag", tag,
                                          "--build-arg", f"GREETING=hello-{word}"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    for line in process.stdout:  # the RUN's first line must come before the build has ended
        seen.append(line)
        if f"greeting=hello-{word}" in line:
            break
    still_running = process.poll() is None
    rest, errors = process.communicate(timeout=300)
    output = "".join(seen) + rest
    assert process.returncode == 0, output + errors
    assert still_running, "the RUN step's output only came when the build had ended"
    assert "Step 1/3 : FROM" in output and "Step 3/3 : RUN" in output
    assert "second" in output and f"built {tag}" in output
    greeting = docker_client.containers.run(tag, ["cat", "/greeting"], remove=True, user="65534:65534")
    assert greeting.decode().strip() == f"hello-{word}"


def test_a_failing_run_exits_1_with_the_engines_error(tmp_path, busybox, tag, docker_client):
    ctx = context(tmp_path, f"FROM {busybox}\nRUN echo about-to-fail && exit 7\n")
    done = run_build(tmp_path, "--context", str(ctx), "--tag", tag)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "about-to-fail" in done.stdout
    assert "build failed:" in done.stdout and "returned a non-zero code: 7" in done.stdout
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)


def test_a_missing_context_exits_2(tmp_path):
    done = run_build(tmp_path, "--context", str(tmp_path / "nowhere"), "--tag", "x:y")
    assert done.returncode == 2
    assert f"{tmp_path / 'nowhere'} is not a directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_context_without_dockerfile_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_build(tmp_path, "--context", str(tmp_path / "empty"), "--tag", "x:y")
    assert done.returncode == 2
    assert "has no Dockerfile" in done.stderr


def test_a_malformed_build_arg_exits_2(tmp_path, busybox):
    ctx = context(tmp_path, f"FROM {busybox}\n")
    done = run_build(tmp_path, "--context", str(ctx), "--tag", "x:y", "--build-arg", "NOEQUALS")
    assert done.returncode == 2
    assert "--build-arg 'NOEQUALS': expected KEY=VALUE" in done.stderr


def test_the_default_tag_is_the_workers_image_in_the_site_file(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("image: registry.example/indico:3.3\ncontainers:\n  worker:\n    image: local/indico:3.3.1\n")
    assert default_tag(str(site)) == ("local/indico:3.3.1", f"containers.worker.image in {site}")
    site.write_text("image: registry.example/indico:3.3\ncontainers:\n  worker: {}\n")
    assert default_tag(str(site))[0] == "registry.example/indico:3.3"
    assert default_tag(str(tmp_path / "absent.yaml"))[0] == DEFAULT_TAG
