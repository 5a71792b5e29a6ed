"""`ot bench live`'s pure parts: naming a process by its command line, the process tree, the CPU
of reaped children."""

from __future__ import annotations

import os
import subprocess
import sys

from ot_tools.bench.live import component, processes, tree


def test_components_are_named_by_program_not_by_paths_or_json_arguments():
    py = "/work/x/.venv/bin/python"
    socket = "--grpc-socket /work/x/.dagster/code-server.sock"
    ref = '--instance-ref {"__class__": "InstanceRef", "settings": "code-server"}'
    assert component(f"{py} /work/x/.venv/bin/dagster-daemon run {socket}") == "dagster daemon"
    assert component(f"{py} /work/x/.venv/bin/dagster-webserver {socket} -p 3000") == (
        "dagster webserver"
    )
    assert component(f"{py} -m dagster._daemon run --log-level info {ref}") == "dagster daemon"
    assert component(f"{py} /x/dagster code-server start -m ot_pipeline.definitions") == (
        "dagster code server"
    )
    assert component(f"{py} -m dagster api grpc --lazy-load-user-code") == "dagster code server"
    assert component(f"{py} -B -c from multiprocessing.spawn import spawn_main") == "dagster runs"
    assert component("/usr/bin/java -Xmx512m -Dkafka.logs.dir=/x kafka.Kafka /x/p") == "kafka"
    assert component("postgres: ot ot 127.0.0.1(5) idle") == "postgres"
    assert component(f"{py} /work/x/.venv/bin/ot land") == "lander"
    assert component(f"{py} /work/x/.venv/bin/ot state") == "state-writer"
    assert component(f"{py} -m streaming.run --rate 200") == "make run"
    assert component("/bin/sleep 5") == "other"


def test_the_tree_counts_the_cpu_of_children_it_reaped():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys, time; subprocess.run([sys.executable, "
         f"'-c', {burn!r}]); time.sleep(30)"],
    )  # fmt: skip
    try:
        for _ in range(100):
            members = tree(processes(), [parent.pid])
            if members and members[0].cpu_s >= 0.3 and len(members) == 1:
                break  # the child exited and was reaped: its CPU is the parent's now
            subprocess.run(["sleep", "0.1"])
        assert [p.pid for p in members] == [parent.pid]
        assert members[0].cpu_s >= 0.3
        assert os.getpid() not in {p.pid for p in members}
    finally:
        parent.kill()
        parent.wait()
