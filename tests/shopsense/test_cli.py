import json
import os
import subprocess
import sys

from shopsense.settings import Settings


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-c", "from shopsense.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_settings_come_from_shopsense_env(monkeypatch):
    monkeypatch.setenv("SHOPSENSE_SERVE__PORT", "9123")
    monkeypatch.setenv("SHOPSENSE_IMAGES__ALLOW_HOSTS", '["cdn.example.com", "10.0.0.0/8"]')
    monkeypatch.setenv("SHOPSENSE_MODEL_NAME", "other")
    s = Settings()
    assert s.serve.port == 9123 and s.images.allow_hosts == ["cdn.example.com", "10.0.0.0/8"]
    assert s.default_model_uri() == "models:/other@champion"
    assert s.tracking_uri().startswith("sqlite:///")


def test_help_lists_every_subcommand():
    p = run_cli("--help")
    assert p.returncode == 0
    for cmd in ("train", "prepare", "evaluate", "serve", "stop", "demo", "data", "models",
                "index", "search", "retrieval"):
        assert cmd in p.stdout


def test_bad_setting_is_one_readable_line(tmp_path):
    p = run_cli("models", "list", env={**os.environ, "SHOPSENSE_SERVE__PORT": "abc",
                                       "SHOPSENSE_HOME": str(tmp_path)})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == ("error: invalid setting serve.port: Input should be a valid "
                                "integer, unable to parse string as an integer")


def test_data_sets_and_export_eval(data_dir, tmp_path):
    env = {**os.environ, "SHOPSENSE_DATA_DIR": str(data_dir), "SHOPSENSE_HOME": str(tmp_path)}
    p = run_cli("data", "sets", env=env)
    assert p.returncode == 0, p.stderr
    assert "blitzer-dvd" in p.stdout and "negative=1000" in p.stdout
    out = tmp_path / "eval.jsonl"
    p = run_cli("data", "export-eval", "--sets", "uci-imdb", "--limit", "10", "--out", str(out),
                env=env)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10 and {"text", "label", "category"} <= set(rows[0])
    p = run_cli("data", "export-eval", "--sets", "nope", "--out", str(out), env=env)
    assert p.returncode == 2 and p.stderr.startswith("error:")


def test_serve_with_an_unknown_model_fails_fast_in_one_line(tmp_path):
    p = run_cli("serve", "--model", "models:/nope@champion",
                env={**os.environ, "SHOPSENSE_HOME": str(tmp_path)})
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: models:/nope@champion: not in the registry at sqlite:///{tmp_path}/mlflow.db"]


def test_data_import_writes_a_dataset_to_the_store(data_dir, tmp_path):
    from shopsense.data.dataset import read_dataset
    from shopsense.store import open_store

    env = {**os.environ, "SHOPSENSE_DATA_DIR": str(data_dir), "SHOPSENSE_HOME": str(tmp_path)}
    uri = (tmp_path / "store").as_uri() + "/uci"
    p = run_cli("data", "import", "--sets", "uci-amazon,uci-imdb", "--to", uri, env=env)
    assert p.returncode == 0, p.stderr
    manifest, reviews = read_dataset(open_store((tmp_path / "store").as_uri()), "uci")
    assert manifest.count == 2000 and manifest.labels.positive == 1000
    assert len(list(reviews)) == 2000
    p = run_cli("data", "import", "--sets", "uci-amazon", "--to", "nowhere", env=env)
    assert p.returncode == 2 and p.stderr.startswith("error: --to: dataset URI must look like")


def test_train_cli_registers_and_prints_clean_json(data_dir, tmp_path):
    env = {**os.environ, "SHOPSENSE_DATA_DIR": str(data_dir), "SHOPSENSE_HOME": str(tmp_path)}
    p = run_cli("train", "--recipe", "demo", "--train-sets", "uci-amazon", "--eval-sets",
                "uci-imdb", "--max-train-per-set", "24", "--max-eval-per-set", "16",
                "--epochs", "0.5", "--json", env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)  # logs go to stderr: stdout is the JSON alone
    assert out["registry"]["version"] == "1" and out["registry"]["promote"] is True
    assert out["eval"]["n"] == 16
    listing = run_cli("models", "list", env=env)
    assert "v1" in listing.stdout and "champion" in listing.stdout
    p = run_cli("train", "--train-sets", "nope", "--json", env=env)
    assert p.returncode == 2 and p.stderr.strip().startswith("error:")
    assert "Traceback" not in p.stderr


def test_shell_completion_script_and_completions(tmp_path):
    """`shopsense --show-completion bash` prints a script; the completion protocol it uses
    lists the sub-commands (entry-point ones included)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from shopsense.cli import main; main()"]
    p = subprocess.run([*cmd, "--show-completion", "bash"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "_SHOPSENSE_COMPLETE" in p.stdout.upper()
    env = {**os.environ, "_SHOPSENSE_COMPLETE": "complete_bash", "COMP_WORDS": "shopsense co",
           "COMP_CWORD": "1"}
    p = subprocess.run([*cmd], capture_output=True, text=True, env=env, timeout=120)
    assert "coldstart" in p.stdout.split()
