// One machine in depth: status, gauges with the alert limits, a chart per metric (live 15 min,
// or 24 h / 7 d from the history endpoint) and the machine's alert timeline.
import { useEffect, useState } from "react";
import { type Alert, type Machine, type MetricLimits, type Page, ApiError, api, query } from "../api";
import { SEVERITY_ICON, STATUS_ICON, ago, dateTime, num } from "../format";
import { plant, useMachine, usePlant } from "../live";
import { sortMetrics, useLimits } from "../limits";
import { onLink } from "../router";
import { usePoll } from "../usePoll";
import { MetricChart, type Range } from "./Chart";

function niceCeil(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** The gauge's scale: up past the highest limit, or past the value when the metric has none. */
export function gaugeScale(value: number, limits: MetricLimits | undefined): [number, number] {
  const highs = (limits?.limits ?? []).map((l) => l.high).filter((x): x is number => x !== null);
  const lows = (limits?.limits ?? []).map((l) => l.low).filter((x): x is number => x !== null);
  const lo = Math.min(0, value, ...lows.map((l) => l - Math.abs(l) * 0.5));
  const hi = highs.length ? Math.max(...highs) * 1.15 : niceCeil(Math.max(Math.abs(value), 1) * 1.5);
  return [Math.max(lo, limits?.range[0] ?? lo), Math.max(hi, value)];
}

function Gauge({ metric, value, limits }: { metric: string; value: number; limits: MetricLimits | undefined }) {
  const [lo, hi] = gaugeScale(value, limits);
  const frac = (v: number) => Math.min(1, Math.max(0, (v - lo) / (hi - lo || 1)));
  const point = (f: number, r: number) => {
    const a = Math.PI * (1 - f);
    return [60 + r * Math.cos(a), 60 - r * Math.sin(a)];
  };
  const arc = (f0: number, f1: number, r: number) => {
    const [x0, y0] = point(f0, r);
    const [x1, y1] = point(f1, r);
    return `M ${x0} ${y0} A ${r} ${r} 0 0 1 ${x1} ${y1}`; // at most half a turn: never the large arc
  };
  const breached = (limits?.limits ?? []).find(
    (l) => (l.high !== null && value > l.high) || (l.low !== null && value < l.low),
  );
  return (
    <figure className={`gauge ${breached ? "gauge-breach" : ""}`} data-testid={`gauge-${metric}`}>
      <svg viewBox="0 0 120 70" role="img" aria-label={`${metric} ${num(value)} ${limits?.unit ?? ""}`}>
        <path d={arc(0, 1, 48)} className="gauge-track" />
        <path d={arc(0, Math.max(0.001, frac(value)), 48)} className="gauge-value" />
        {(limits?.limits ?? []).flatMap((l) =>
          [l.low, l.high]
            .filter((v): v is number => v !== null)
            .map((v) => {
              const [x0, y0] = point(frac(v), 40);
              const [x1, y1] = point(frac(v), 56);
              return <line key={`${l.rule}-${v}`} x1={x0} y1={y0} x2={x1} y2={y1} className={`gauge-limit sev-${l.severity}`} />;
            }),
        )}
        <text x="60" y="56" textAnchor="middle" className="gauge-text">
          {num(value)}
        </text>
        <text x="12" y="68" textAnchor="middle" className="gauge-scale">
          {num(lo, 0)}
        </text>
        <text x="108" y="68" textAnchor="middle" className="gauge-scale">
          {num(hi, 0)}
        </text>
      </svg>
      <figcaption>
        {metric} <span className="muted">{limits?.unit}</span>
        {breached && (
          <span className="bad">
            {" "}
            · {breached.severity} limit {num(breached.high ?? breached.low)}
          </span>
        )}
      </figcaption>
    </figure>
  );
}

function AlertTimeline({ id }: { id: string }) {
  usePlant(); // refetch when the machine's open alerts change
  const open = [...plant.alerts.values()].filter((a) => a.machine_id === id);
  const openKey = open.map((a) => `${a.alert_id}:${a.status}:${a.severity}`).join(",");
  const polled = usePoll(() => api<Page<Alert>>(`/alerts${query({ machine: id, limit: 50 })}`), 15_000, [id, openKey]);
  const items = polled.data?.items ?? [];
  return (
    <section aria-labelledby="timeline-title" className="timeline" data-testid="alert-timeline">
      <h2 id="timeline-title">Alert timeline</h2>
      {polled.loading && !polled.data && <p className="state">Loading alerts…</p>}
      {polled.error && (
        <p className="state error" role="alert">
          {polled.error}
        </p>
      )}
      {polled.data && items.length === 0 && <p className="state">No alerts for this machine.</p>}
      <ol>
        {items.map((a) => (
          <li key={a.alert_id} className={`sev-${a.severity}`}>
            <span className="sev-tag">
              <span aria-hidden="true">{SEVERITY_ICON[a.severity]}</span> {a.severity}
            </span>{" "}
            <b>{a.rule}</b> {a.metric !== "*" && a.metric} {a.value !== null && <>= {num(a.value)}</>}
            {a.threshold !== null && <span className="muted"> (limit {num(a.threshold)})</span>}
            <div className="muted">
              {dateTime(a.opened_ms)} → {a.cleared_ms ? dateTime(a.cleared_ms) : "open"} · {a.status.replace("_", " ").toLowerCase()}
              {a.ack_by && ` · ack by ${a.ack_by}`}
              {a.assignee && ` · assigned to ${a.assignee}`}
            </div>
          </li>
        ))}
      </ol>
    </section>
  );
}

export function MachineView({ id }: { id: string }) {
  const live = useMachine(id);
  const limits = useLimits();
  const [range, setRange] = useState<Range>("15m");
  const [fetched, setFetched] = useState<Machine | null>(null);
  const [missing, setMissing] = useState<string | null>(null);

  // Not (yet) in the live plant: ask the API, to tell "unknown" from "still loading".
  useEffect(() => {
    if (live) return;
    let alive = true;
    api<Machine>(`/machines/${encodeURIComponent(id)}`)
      .then((m) => alive && setFetched(m))
      .catch((e: ApiError) => alive && setMissing(e.status === 404 ? `No machine ${id} has reported.` : e.message));
    return () => {
      alive = false;
    };
  }, [id, live]);

  const m = live ?? fetched;
  if (!m) {
    return (
      <section>
        <p>
          <a href="/" onClick={onLink}>
            ← Fleet
          </a>
        </p>
        {missing ? (
          <p className="state error" role="alert">
            {missing}
          </p>
        ) : (
          <p className="state">Loading {id}…</p>
        )}
      </section>
    );
  }
  const metrics = sortMetrics(Object.keys(m.values));
  return (
    <section aria-labelledby="machine-title" className="machine" data-testid="machine-view">
      <p>
        <a href="/" onClick={onLink}>
          ← Fleet
        </a>
      </p>
      <div className="view-head">
        <h1 id="machine-title">
          {m.machine_id}{" "}
          <span className={`badge status-${m.status}`} data-testid="machine-status">
            <span aria-hidden="true">{STATUS_ICON[m.status]}</span> {m.status}
          </span>
        </h1>
        <p className="muted">
          {m.type} · {m.line} · last seen {ago(m.last_seen)}
        </p>
      </div>
      <div className="gauges">
        {metrics.map((name) => (
          <Gauge key={name} metric={name} value={m.values[name].value} limits={limits?.[name]} />
        ))}
      </div>
      <div className="range" role="group" aria-label="Chart range">
        {(["15m", "24h", "7d"] as Range[]).map((r) => (
          <button key={r} type="button" aria-pressed={range === r} onClick={() => setRange(r)} data-testid={`range-${r}`}>
            {r === "15m" ? "Live 15 min" : r === "24h" ? "24 h" : "7 days"}
          </button>
        ))}
        <span className="muted legend-note">dashed: alert limits · rings: anomalies the pipeline flagged</span>
      </div>
      <div className="charts">
        {metrics.map((name) => (
          <MetricChart key={`${name}-${range}`} id={m.machine_id} metric={name} range={range} limits={limits?.[name]} />
        ))}
      </div>
      <AlertTimeline id={m.machine_id} />
    </section>
  );
}
