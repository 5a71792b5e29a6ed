"""Prometheus of `ot stack up --monitoring`: its configuration and the alerting rules pass
`promtool`, each rule fires when it should and stays quiet otherwise (promtool's rule unit
tests), and the stack starts a real Prometheus that loads the rules and scrapes every command."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ot_pipeline_tests.support.operator_stack import wait_for
from ot_pipeline_tests.support.paths import REPO_ROOT
from ot_pipeline_tests.support.ports import free_port
from streaming.observability.metrics import METRICS_PORTS, SCRAPE_JOBS
from streaming.stack.local import LocalStack
from streaming.stack.processes import apt_install
from streaming.stack.prometheus import RULES, Prometheus, binary

RULE_NAMES = {"ConsumerDown", "ConsumerLagGrowing", "DeadLetterRateHigh", "GatewayDeadLetters"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """Debian's prometheus package ships promtool; `ot stack up --monitoring` installs it."""
    found = binary("promtool")
    if found is None:  # the way the stack installs it
        apt_install(["prometheus"], "prometheus", REPO_ROOT / ".stack" / "logs" / "apt.log")
        found = binary("promtool")
    assert found, "promtool not installed"
    return found


def run(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd)


def test_alerting_rules_pass_promtool(promtool: str) -> None:
    done = run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == RULE_NAMES


def test_local_scrape_config_passes_promtool_and_scrapes_every_command(
    promtool: str, tmp_path: Path
) -> None:
    config = Prometheus(tmp_path).write_config()
    done = run(promtool, "check", "config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"]
        for job in yaml.safe_load(config.read_text())["scrape_configs"]
    }
    assert jobs == {SCRAPE_JOBS[c]: [f"127.0.0.1:{p}"] for c, p in METRICS_PORTS.items()}


def test_compose_scrape_config_passes_promtool(promtool: str) -> None:
    compose_config = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
    done = run(promtool, "check", "config", "--syntax-only", str(compose_config))
    assert done.returncode == 0, done.stdout + done.stderr


def annotations(alert: str, summary: str, **labels: str) -> dict[str, str]:
    """What the alert should say: `summary` as rendered, its description with `labels` in."""
    (rule,) = [
        r
        for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
        if r.get("alert") == alert
    ]
    description = rule["annotations"]["description"]
    for name, value in labels.items():
        description = description.replace(f"{{{{ $labels.{name} }}}}", value)
    return {"summary": summary, "description": description}


# Series over time for promtool's rule unit tests: 'a+bxN' is a, a+b, ... N more samples.
RULE_TESTS: dict[str, Any] = {
    "rule_files": [str(RULES)],
    "evaluation_interval": "1m",
    "tests": [
        {  # the lander stops answering: ConsumerDown after a minute; the state writer is fine
            "interval": "1m",
            "input_series": [
                {"series": 'up{job="lander", instance="lander:9401"}', "values": "1 1 0 0 0"},
                {"series": 'up{job="state-writer", instance="sw:9402"}', "values": "1 1 1 1 1"},
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "ConsumerDown", "exp_alerts": []},
                {
                    "eval_time": "4m",
                    "alertname": "ConsumerDown",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "critical",
                                "job": "lander",
                                "instance": "lander:9401",
                            },
                            "exp_annotations": annotations(
                                "ConsumerDown", "lander is down (lander:9401)", job="lander"
                            ),
                        }
                    ],
                },
            ],
        },
        {  # lag growing by 500 a minute past 1,000 fires; a steady lag of 5,000 does not
            "interval": "1m",
            "input_series": [
                {
                    "series": 'ot_consumer_lag_messages{job="lander", group="lake-lander", '
                    'partition="0"}',
                    "values": "0+500x40",
                },
                {
                    "series": 'ot_consumer_lag_messages{job="state-writer", '
                    'group="state-writer", partition="0"}',
                    "values": "5000x40",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "ConsumerLagGrowing",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "job": "lander",
                                "group": "lake-lander",
                            },
                            "exp_annotations": annotations(
                                "ConsumerLagGrowing",
                                "lake-lander lag is growing (15k messages)",
                                group="lake-lander",
                            ),
                        }
                    ],
                }
            ],
        },
        {  # 10 % of the lander's input dead-lettered fires; the gateway at 0.5/s stays quiet
            "interval": "1m",
            "input_series": [
                {
                    "series": 'ot_consumer_messages_total{group="lake-lander"}',
                    "values": "0+6000x30",
                },
                {
                    "series": 'ot_dead_letters_total{stage="lander", reason="OUT_OF_RANGE"}',
                    "values": "0+600x30",
                },
                {
                    "series": 'ot_dead_letters_total{stage="gateway", reason="BAD_JSON"}',
                    "values": "0+30x30",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "DeadLetterRateHigh",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning"},
                            "exp_annotations": annotations(
                                "DeadLetterRateHigh", "10% of readings go to the dead-letter topic"
                            ),
                        }
                    ],
                },
                {"eval_time": "20m", "alertname": "GatewayDeadLetters", "exp_alerts": []},
            ],
        },
        {  # a steady 2 dead letters/s at the MQTT bridge fires GatewayDeadLetters
            "interval": "1m",
            "input_series": [
                {
                    "series": 'ot_dead_letters_total{stage="mqtt", reason="UNKNOWN_METRIC"}',
                    "values": "0+120x30",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "GatewayDeadLetters",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "stage": "mqtt",
                                "reason": "UNKNOWN_METRIC",
                            },
                            "exp_annotations": annotations(
                                "GatewayDeadLetters",
                                "mqtt dead-letters 2/s (UNKNOWN_METRIC)",
                                stage="mqtt",
                            ),
                        }
                    ],
                },
                {"eval_time": "20m", "alertname": "DeadLetterRateHigh", "exp_alerts": []},
            ],
        },
    ],
}


def test_each_alert_fires_when_it_should_and_not_otherwise(promtool: str, tmp_path: Path) -> None:
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(yaml.safe_dump(RULE_TESTS, sort_keys=False))
    done = run(promtool, "test", "rules", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """The unit tests above are real: the same input with a wrong expectation fails."""
    wrong = json.loads(json.dumps(RULE_TESTS))
    wrong["tests"][0]["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"job": "lander"}}]
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(yaml.safe_dump(wrong, sort_keys=False))
    assert run(promtool, "test", "rules", str(tests)).returncode != 0


def test_stack_starts_prometheus_with_the_rules_and_every_scrape_job(tmp_path: Path) -> None:
    stack = LocalStack(root=tmp_path / "stack", prometheus_port=free_port(), services=())
    stack = stack.with_monitoring()
    assert stack.services == ("prometheus",)
    try:
        assert stack.up() == ["prometheus"]
        assert stack.status() == {"prometheus": True}
        assert stack.up() == []  # idempotent: its own Prometheus is reused
        url = stack.prometheus.url

        def get(path: str) -> Any:
            with urllib.request.urlopen(f"{url}{path}", timeout=5) as reply:
                return json.load(reply)["data"]

        (group,) = get("/api/v1/rules")["groups"]
        assert {r["name"] for r in group["rules"]} == RULE_NAMES
        jobs = wait_for(  # the scrape manager lists its targets shortly after start
            lambda: {t["labels"]["job"] for t in get("/api/v1/targets")["activeTargets"]}, 10
        )
        assert jobs == set(SCRAPE_JOBS.values())
    finally:
        assert stack.down() == ["prometheus"]
    assert stack.status() == {"prometheus": False}
