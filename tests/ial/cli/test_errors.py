"""Bad input gets one line, ``Error: <what, where it came from>``, exit status 1 — never a
traceback (the ``ial`` command's central handler of ``UserError``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ial.cli import main
from tests.conftest import REPO, free_port, wait_for_port

DEMO_TRAIN = str(REPO / "configs" / "train" / "demo.yaml")


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error_line(result, *expected: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("abcdefghijk,1,violin,train\n")
    return str(path)


@pytest.fixture
def bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("root: [unclosed\nsteps: 3\n")
    return str(path)


def test_a_config_file_that_is_not_yaml(tmp_path, manifest, bad_yaml):
    for args in (["ingest", "--manifest", manifest, "--no-prefect"],
                 ["featurize", "--no-prefect"], ["train"]):
        one_error_line(run(*args, "--config", bad_yaml, "--root", str(tmp_path / "r")),
                       f"config file {bad_yaml}: not valid YAML: line 2")


def test_a_nested_typo_names_the_field_and_the_set_it_came_from(tmp_path):
    one_error_line(run("train", "--config", DEMO_TRAIN, "--root", str(tmp_path),
                       "--set", "method.lambda_indd=0"),
                   "config field 'method.lambda_indd': unknown field; MethodConfig has:",
                   "(from --set method.lambda_indd=0)")


def test_a_bad_value_names_the_option_not_the_file(tmp_path, manifest):
    one_error_line(run("ingest", "--manifest", manifest, "--url-template", "http://x/v.mp4",
                       "--no-prefect", "--root", str(tmp_path)),
                   "'url_template': must contain {video_id} (from --url-template)")
    one_error_line(run("ingest", "--manifest", manifest, "--cookies", str(tmp_path / "none.txt"),
                       "--no-prefect", "--root", str(tmp_path)),
                   "'ytdlp_options.cookiefile': cookie file not found", "(from --cookies")
    line = one_error_line(run("ingest", "--manifest", manifest, "--proxy", "sock5://bob:pw@h:1080",
                              "--no-prefect", "--root", str(tmp_path)),
                          "'ytdlp_options.proxy': 'sock5://***@h:1080' is not a proxy URL",
                          "socks5h", "(from --cookies/--proxy")
    assert "pw" not in line  # a proxy's password is never printed


def test_train_without_shards(tmp_path):
    one_error_line(run("train", "--config", DEMO_TRAIN, "--root", str(tmp_path)),
                   "no complete shards of dataset 'demo'", "featurize it first")


@pytest.mark.parametrize("text, expected", [
    ("# two nodes\nnode1 slots=8\nnode2 slots=x\n", "line 3: 'node2 slots=x' is not '<host> "
                                                      "slots=<processes>'"),
    ("node1 slots=8\n\nnode1 slots=8\n", "line 3: host 'node1' is listed twice"),
    ("# nothing yet\n", "no '<host> slots=<processes>' line")])
def test_a_bad_hostfile_names_its_line_before_anything_starts(tmp_path, text, expected):
    # DeepSpeed's runner ends in two tracebacks on each of these
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(text)
    one_error_line(run("train", "--config", DEMO_TRAIN, "--root", str(tmp_path / "data"),
                       "--hostfile", str(hostfile)), f"hostfile {hostfile}", expected)
    assert not (tmp_path / "data").exists()


def test_featurize_of_a_dataset_that_was_never_ingested_creates_nothing(tmp_path):
    one_error_line(run("featurize", "--root", str(tmp_path), "--dataset", "vggsund",
                       "--no-prefect"),
                   "no clip index for dataset 'vggsund'", "datasets with a clip index")
    assert not (tmp_path / "shards").exists()


def test_with_prefect_bad_input_is_one_line_before_any_flow_starts(tmp_path):
    """The default path runs a Prefect flow; a bad manifest or dataset is found before Prefect
    starts its server, so the error is said once, without the flow runs' log lines around it."""
    bad = tmp_path / "m.csv"
    bad.write_text("abcdefghijk,1\n")
    for args, expected in (
            (("ingest", "--manifest", str(bad), "--root", str(tmp_path / "r")),
             "m.csv:1: expected 4 fields"),
            (("featurize", "--root", str(tmp_path / "r"), "--dataset", "vggsund"),
             "no clip index for dataset 'vggsund'")):
        result = run(*args)
        line = one_error_line(result, expected)
        assert result.output.strip().splitlines() == [line], result.output
    assert not (tmp_path / "r" / "clips").exists()


def test_an_error_inside_a_prefect_flow_is_the_last_line(tmp_path, manifest):
    """An error found while the flow runs (no clip could be downloaded) ends the output: the
    temporary Prefect server's shutdown at exit does not log after it. A process of its own: the
    shutdown happens at its exit."""
    port = free_port()  # nothing listens there: every download is refused
    cli = "import sys; from ial.cli import main; sys.argv[0] = 'ial'; main()"
    cmd = [sys.executable, "-c", cli, "ingest", "--manifest", manifest,
           "--root", str(tmp_path / "r"), "--set", "retries=0",
           "--set", f"url_template=http://127.0.0.1:{port}/{{video_id}}"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300, cwd=tmp_path)  # one stream, in the order printed
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stdout, proc.stdout
    assert lines[-1].startswith("Error: none of the 1 clips of ") and "connection_error" in \
        lines[-1], lines[-3:]


@pytest.mark.parametrize("kind, expected", [
    ("directory", "is a directory, not a manifest file"),
    ("latin1", ":1: not UTF-8 text"),
])
def test_a_manifest_that_is_a_directory_or_not_utf8(tmp_path, kind, expected):
    path = tmp_path / "manifest_dir"
    if kind == "directory":
        path.mkdir()
    else:
        path = tmp_path / "m.csv"
        path.write_bytes("abc,1,caf\xe9,train\n".encode("latin-1"))
    one_error_line(run("ingest", "--manifest", str(path), "--no-prefect", "--root",
                       str(tmp_path / "r")), expected)


def test_a_root_that_is_a_file_or_not_writable(tmp_path, manifest):
    a_file = tmp_path / "data"
    a_file.write_text("x")
    one_error_line(run("ingest", "--manifest", manifest, "--no-prefect", "--root", str(a_file)),
                   f"storage root {a_file}: is a file, not a directory")
    one_error_line(run("featurize", "--no-prefect", "--root", "/proc"),
                   "storage root /proc: not writable")


def test_an_s3_bucket_that_does_not_exist(s3_root):
    bucket = s3_root.split("/")[2]
    one_error_line(run("featurize", "--no-prefect", "--root", f"s3://{bucket}-gone/ial",
                       "--dataset", "x"),
                   f"bucket '{bucket}-gone' does not exist at http://127.0.0.1:")


@pytest.fixture
def s3_with_auth():
    """A moto S3 server that checks credentials (every request must be signed by a known key)."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    try:
        wait_for_port(port, 30, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_wrong_s3_credentials_are_named_never_shown(s3_with_auth, monkeypatch):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a cached client would keep the session's endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_with_auth)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    line = one_error_line(run("featurize", "--no-prefect", "--root", "s3://bucket/ial"),
                          "access to bucket 'bucket' refused", "InvalidAccessKeyId",
                          "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    assert "wrong-secret-value" not in line and "AKIAWRONGKEY" not in line
    s3fs.S3FileSystem.clear_instance_cache()


def test_evaluate_given_a_run_directory_names_the_exports_in_it(tmp_path):
    run_dir = tmp_path / "checkpoints" / "r1"
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "best" / "model.pt").write_bytes(b"")
    one_error_line(run("evaluate", "--checkpoint", str(run_dir), "--data",
                       str(tmp_path / "shards" / "demo")),
                   f"checkpoint: {run_dir}: a directory, not a model export; pass one of its "
                   f"exports: {run_dir}/best/model.pt (best by validation)")


def test_ctrl_c_is_one_line_that_says_how_to_resume(monkeypatch, tmp_path):
    import ial.evaluate.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ial.evaluate.pipeline, "evaluate", interrupted)
    result = run("evaluate", "--checkpoint", str(tmp_path / "model.pt"), "--data",
                 str(tmp_path / "shards" / "demo"))
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines() == [
        "Interrupted: what was finished is kept; run the same command again to resume."]


def test_a_dask_address_without_a_scheduler_is_one_line_before_any_flow_starts(tmp_path,
                                                                               manifest):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    result = run("ingest", "--manifest", manifest, "--root", str(tmp_path / "r"),
                 "--dask-address", address)
    line = one_error_line(result, f"no Dask scheduler at '{address}'", "--dask-address")
    assert result.output.strip().splitlines() == [line], result.output
    assert not (tmp_path / "r" / "clips").exists()
