"""bench.py as a script on the tiny random models (conftest.py): the table, the exit code, the 30-s padding."""
import json
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_bench_prints_the_table_and_exits_by_its_ok_column(tiny_paths):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench.py"), f"--whisper={tiny_paths[0]}", f"--llm={tiny_paths[1]}",
                           "--device=cpu", "--n_clips=4", "--n_train_steps=1", "--max_new_tokens=4", "--dtype=float32"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{out[-3000:]}\n{proc.stderr[-3000:]}"

    # every row, with numbers in the ours, published and ratio columns
    table = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if line.startswith('|') and len(cells) == 6 and cells[0] != 'metric' and not cells[0].startswith('-'):
            table[cells[0]] = cells
    expected = ['train clips/s', 'train tokens/s', 'infer single clip s', 'infer single tok/s', 'infer batch4 clips/s',
                'infer batch4 tok/s', 'peak RSS MiB train', 'peak RSS MiB infer']
    assert list(table) == expected, out
    for metric, ours, published, ratio, target, ok in table.values():
        assert float(ours) > 0 and float(published) > 0, (metric, ours, published)
        assert abs(float(ratio.rstrip('x')) - (float(published) / float(ours) if metric.endswith(' s') or metric.startswith('peak')
                                               else float(ours) / float(published))) < 0.01 * float(ratio.rstrip('x')) + 1e-3
        if target:
            assert ok == ('yes' if float(ratio.rstrip('x')) >= float(target.strip('>=x')) else 'no'), (metric, ratio, target, ok)
        else:
            assert ok == ''
    # the exit code follows the ok column
    assert proc.returncode == (1 if any(c[5] == 'no' for c in table.values()) else 0), out

    # the machine-readable line agrees with the table
    result = json.loads(next(l for l in out.splitlines() if l.startswith('BENCH_RESULT '))[len('BENCH_RESULT '):])
    assert [r['metric'] for r in result['rows']] == expected
    assert result['missed'] == [m for m in expected if table[m][5] == 'no']

    # the published way ran the adapter over all 1500 frames of a 30-s window, ours over the real length (clips < 30 s)
    for phase in ('train', 'infer'):
        m = re.search(rf"^{phase}: frames per clip into the adapter: ours (\d+)-(\d+), published (\d+)-(\d+)$", out, re.M)
        assert m, out
        assert int(m[3]) == int(m[4]) == 1500
        assert 0 < int(m[1]) <= int(m[2]) < 1500
    assert "train MFU: n/a (CPU)" in out
    # ours' own Whisper transcription pass, timed inside its answers: a part of them, and the bound it puts on the ratio
    m = re.search(r"Whisper's 30-s transcription is ([\d.]+) of ours' ([\d.]+) s for the single clip and ([\d.]+) of "
                  r"([\d.]+) s for the batch; were all else free, ours would be ([\d.]+)x and ([\d.]+)x", out)
    assert m, out
    w1, o1, wb, ob, bound1, boundb = map(float, m.groups())
    assert 0 < w1 <= o1 and 0 < wb <= ob
    assert abs(bound1 - float(table['infer single clip s'][2]) / w1) < 0.02 * bound1 + 0.01
    assert re.search(r"feature cache .*: [\d.]+ s for 4 clips", out)
