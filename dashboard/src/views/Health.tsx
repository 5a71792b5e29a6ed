// The header figures and the data-health strip: the fleet's counts from the live plant, the
// pipeline's figures from `GET /api/v1/health/data` and readiness from `GET /api/v1/health`.
import { useRef } from "react";
import { type AssetChecks, type DataHealth, type Readiness, SEVERITIES, STATUSES, api } from "../api";
import { ago, num } from "../format";
import { STATUS_ICON, SEVERITY_ICON } from "../format";
import { plant, usePlant } from "../live";
import { type Polled, usePoll } from "../usePoll";

export interface HealthFigures {
  data: DataHealth;
  readiness: Readiness | null;
  deadLettersPerMin: number | null;
}

const EVERY_MS = 5000;

export function useDataHealth(): Polled<HealthFigures> {
  const previous = useRef<DataHealth | null>(null);
  return usePoll<HealthFigures>(
    async () => {
      const [data, readiness] = await Promise.all([
        api<DataHealth>("/health/data"),
        // 503 still carries the report: which checks fail is what the strip shows.
        api<Readiness>("/health", {}, [503]).catch(
          () => null,
        ),
      ]);
      const before = previous.current;
      let rate: number | null = null;
      if (before && before.dead_letters !== null && data.dead_letters !== null && data.at_ms > before.at_ms) {
        rate = ((data.dead_letters - before.dead_letters) * 60000) / (data.at_ms - before.at_ms);
      }
      previous.current = data;
      return { data, readiness, deadLettersPerMin: rate };
    },
    EVERY_MS,
    [],
  );
}

export function Figures({ health }: { health: HealthFigures | null }) {
  usePlant();
  const byStatus = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<string, number>;
  for (const m of plant.machines.values()) byStatus[m.status] = (byStatus[m.status] ?? 0) + 1;
  const bySeverity = Object.fromEntries(SEVERITIES.map((s) => [s, 0])) as Record<string, number>;
  for (const a of plant.alerts.values()) bySeverity[a.severity] = (bySeverity[a.severity] ?? 0) + 1;
  const lander = health?.readiness?.checks.consumers?.lander as { lag?: number | null } | undefined;
  const lag = (health?.data.state_writer_lag ?? 0) + (lander?.lag ?? 0);
  return (
    <section className="figures" aria-label="Plant figures">
      <div className="figure-group" aria-label="Machines by status" data-testid="status-counts">
        {STATUSES.map((s) => (
          <div key={s} className={`figure status-${s}`} data-status={s}>
            <span className="figure-value">{byStatus[s]}</span>
            <span className="figure-label">
              <span aria-hidden="true">{STATUS_ICON[s]}</span> {s.toLowerCase()}
            </span>
          </div>
        ))}
      </div>
      <div className="figure-group">
        <div className="figure" data-testid="readings-rate">
          <span className="figure-value">{num(health?.data.readings_per_s ?? null, 0)}</span>
          <span className="figure-label">readings/s</span>
        </div>
        <div className="figure" data-testid="consumer-lag">
          <span className="figure-value">{health ? num(lag, 0) : "–"}</span>
          <span className="figure-label">consumer lag</span>
        </div>
      </div>
      <div className="figure-group" aria-label="Open alerts by severity" data-testid="alert-counts">
        {SEVERITIES.map((s) => (
          <div key={s} className={`figure sev-${s}`} data-severity={s}>
            <span className="figure-value">{bySeverity[s]}</span>
            <span className="figure-label">
              <span aria-hidden="true">{SEVERITY_ICON[s]}</span> {s.toLowerCase()}
            </span>
          </div>
        ))}
      </div>
    </section>
  );
}

export function HealthStrip({ polled }: { polled: Polled<HealthFigures> }) {
  const h = polled.data;
  if (!h) {
    return (
      <section className="strip" aria-label="Data health" data-testid="health-strip">
        {polled.error ? <span className="bad">Data health unavailable: {polled.error}</span> : <span>Loading data health…</span>}
      </section>
    );
  }
  const checks = h.readiness?.checks ?? {};
  const failing = Object.entries(checks).filter(([, c]) => c.status !== "ok");
  const writerLag = h.data.state_writer_lag;
  const lander = checks.consumers?.lander as { lag?: number | null } | undefined;
  return (
    <section className="strip" aria-label="Data health" data-testid="health-strip">
      <span title="state writer / lander messages behind Kafka">
        Lag <b>{num(writerLag, 0)}</b> / <b>{num(lander?.lag ?? null, 0)}</b>
      </span>
      <span title="messages dead-lettered per minute (dead-letter topic total in brackets)">
        DLQ <b>{h.deadLettersPerMin === null ? "–" : num(h.deadLettersPerMin, 1)}</b>/min ({num(h.data.dead_letters, 0)})
      </span>
      <span title="end of the newest minute loaded into the readings_1m rollup">
        Last load <b>{h.data.last_materialization_ms ? ago(h.data.last_materialization_ms) : "none yet"}</b>
      </span>
      <span data-testid="readiness" className={failing.length ? "bad" : "good"}>
        {failing.length === 0 ? (
          <>✔ services ok</>
        ) : (
          <>
            ✖ services failing:{" "}
            {failing.map(([name, c]) => (
              <b key={name} title={c.detail ?? c.status}>
                {name} ({c.status}){" "}
              </b>
            ))}
          </>
        )}
      </span>
      <AssetChecksFigure checks={h.data.asset_checks} />
      {polled.error && <span className="bad">stale: {polled.error}</span>}
      <a href={h.data.dagster_url} target="_blank" rel="noreferrer">
        Dagster UI ↗
      </a>
    </section>
  );
}

function AssetChecksFigure({ checks }: { checks: AssetChecks | undefined }) {
  if (!checks || checks.error !== undefined) {
    return (
      <span data-testid="asset-checks" title={checks?.error ?? "not reported"}>
        Asset checks <b>unknown</b>
      </span>
    );
  }
  const failing = checks.failing ?? [];
  if (failing.length === 0) {
    return (
      <span data-testid="asset-checks" className="good" title={`${checks.executed ?? 0} of ${checks.total ?? 0} checks ran on the latest materializations`}>
        ✔ asset checks <b>{checks.executed ?? 0}/{checks.total ?? 0}</b> passing
      </span>
    );
  }
  return (
    <span data-testid="asset-checks" className="bad">
      ✖ asset checks failing:{" "}
      {failing.map((f) => (
        <b key={`${f.asset}:${f.check}`} title={[f.partition, f.description].filter(Boolean).join(" · ")}>
          {f.asset} {f.check}{" "}
        </b>
      ))}
    </span>
  );
}
