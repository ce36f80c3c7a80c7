"""A task's markers are typed records, read leniently and in the JSON form earlier versions wrote."""

from __future__ import annotations

import json

from slurm_apply._store import layout as jd
from slurm_apply._store import markers
from slurm_apply._store.markers import End, ProcStats, Start, TaskMarkers
from slurm_apply._store.taskfiles import TaskFiles


def _files(tmp_path):
    job_dir = tmp_path / "_rslurm_m"
    jd.tasks_dir(job_dir, 0).mkdir(parents=True)
    jd.write_token(job_dir, "tok")
    return job_dir, TaskFiles(job_dir, 0, 3, "tok")


def test_markers_written_by_a_task_read_back_typed(tmp_path):
    job_dir, files = _files(tmp_path)
    assert files.record_start(Start(time=10.0, node="n1", array_job_id="77", pid=123)) == 1
    assert files.record_start(Start(time=20.0, node="n2", restart_count=1)) == 2
    files.mark_idle()
    end = End(ok=True, rows=5, procs=[ProcStats(proc=0, rows=5, loop_s=0.5)], node="n2",
              started=20.0, ended=25.0, took_over=[4])
    files.mark_done(end)
    got = markers.read(job_dir, 0)
    assert list(got) == [3]
    m = got[3]
    assert [s.node for s in m.starts] == ["n1", "n2"] and m.starts[0].array_job_id == "77"
    assert m.end == end and m.end_of_last_start() == end and m.ended_well
    assert m.idle_since is not None and m.node == "n2"


def test_the_files_keep_the_json_keys_earlier_versions_wrote(tmp_path):
    job_dir, files = _files(tmp_path)
    files.record_start(Start(time=1.0, node="n1", job_id="5", array_job_id="4", pid=9))
    files.mark_done(End(ok=True, rows=2, node="n1", started=1.0, ended=2.0, payload_loaded=1.5))
    start = json.loads(jd.task_marker(job_dir, 0, 3, "start").read_text())
    assert start == {"starts": [{"time": 1.0, "node": "n1", "job_id": "5", "array_job_id": "4",
                                 "restart_count": 0, "pid": 9}]}
    done = json.loads(jd.task_marker(job_dir, 0, 3, "done").read_text())
    for key in ("ok", "failures", "rows", "errors", "loop_s", "procs", "first_row_at", "deaths",
                "took_over", "node", "started", "payload_loaded", "ended"):
        assert key in done


def test_an_end_marker_of_an_earlier_start_does_not_count():
    m = markers.of_files({"start": {"starts": [{"time": 10.0}, {"time": 30.0}]},
                          "done": {"ok": True, "started": 10.0, "ended": 20.0}})
    assert m.end is not None and m.end_of_last_start() is None and not m.ended_well
    assert TaskMarkers().end_of_last_start() is None and not TaskMarkers().started


def test_damaged_or_odd_fields_take_their_defaults(tmp_path):
    m = markers.of_files({"start": {"starts": [{"time": "soon", "node": 7, "pid": 3}, "junk"]},
                          "done": {"ok": "yes", "rows": 4, "procs": [{"rows": "x"}, 5],
                                   "took_over": [1, "2"]}})
    assert m.starts[0] == Start(pid=3) and m.starts[1] == Start()
    assert m.end == End(rows=4, procs=[ProcStats(), ProcStats()], took_over=[1])
    assert markers.of_files({"start": ["not", "a", "dict"]}).starts == ()
    job_dir, files = _files(tmp_path)
    jd.task_marker(job_dir, 0, 1, "done").write_text("{torn")
    assert markers.read(job_dir, 0) == {}


def test_a_stop_note_in_the_heartbeat(tmp_path):
    job_dir, files = _files(tmp_path)
    files.start_heartbeat()
    assert markers.read_stopped(files.heartbeat) is None
    files.write_stop_note({0: (2, 17), 1: (3, 30)})
    assert markers.read_stopped(files.heartbeat).in_flight == {0: (2, 17), 1: (3, 30)}
