"""common.py: one die, one atomic writer, one way to read the config, one OpenAI-compatible client."""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ROOT

import common


def test_die_prints_one_line_to_stderr_and_exits_with_its_code(capsys):
    with pytest.raises(SystemExit) as e:
        common.die("data/x.jsonl: no such file")
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        common.die("nothing usable", code=1)
    assert e.value.code == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == "error: data/x.jsonl: no such file\nerror: nothing usable\n"


def test_write_atomic_leaves_the_old_file_and_no_temporary_one_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_text("the old checkpoint")

    def half_a_write(tmp):
        with open(tmp, "w") as f:
            f.write("half of")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        common.write_atomic(str(path), half_a_write)
    assert os.listdir(tmp_path) == ["ckpt.pt"] and path.read_text() == "the old checkpoint"


def test_write_atomic_syncs_before_it_renames(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    common.write_atomic(str(tmp_path / "a.txt"), "text \u00e9")
    common.write_atomic(str(tmp_path / "b.bin"), b"\x00\x01")
    common.write_atomic(str(tmp_path / "c.json"), lambda tmp: json.dump({"k": 1}, open(tmp, "w")))
    assert calls == ["fsync", "replace"] * 3
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "text \u00e9"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01" and json.loads((tmp_path / "c.json").read_text()) == {"k": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin", "c.json"]


def test_configure_applies_the_command_line_only_to_the_script_being_run():
    imported = {"__name__": "prepare", "n_clips": 1200}
    common.configure(imported)  # this process's command line is pytest's, not the imported script's
    assert imported["n_clips"] == 1200
    common.configure(imported, ["--n_clips=8"])
    assert imported["n_clips"] == 8


def test_a_script_reads_its_config_from_any_directory(tmp_path):
    # get_weights.py used to look for configurator.py in the current directory
    r = subprocess.run([sys.executable, str(ROOT / "get_weights.py"), "--which=nothing"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "overriding: which = 'nothing'" in r.stdout
    assert r.stderr == "error: --which must be one of all, whisper, llm, kokoro (got 'nothing')\n"


def test_the_judge_retries_a_server_error_as_the_pairs_backend_does():
    import eval as ev
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            code, body = (503, {"error": "busy"}) if len(seen) == 1 else \
                (200, {"choices": [{"message": {"content": " 8 4\n"}}], "usage": {"completion_tokens": 3}})
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert ev.http_judge(f"http://127.0.0.1:{server.server_port}/v1", "judge-llm")(["p"]) == ["8 4"]
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 2 and seen[1]["messages"] == [{"role": "user", "content": "p"}]
