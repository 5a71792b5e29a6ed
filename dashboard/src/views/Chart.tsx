// One metric's chart (uPlot): raw readings beside their 1-minute and 5-minute means on one time
// axis, the alert limits as dashed lines, the pipeline's anomalies as marked points. The live
// range streams: each new reading of the metric from the change feed is appended in place.
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { type Anomaly, type History, type MetricLimits, type Page, api, query } from "../api";
import { plant } from "../live";

export type Range = "15m" | "24h" | "7d";
const SPAN_MS: Record<Range, number> = { "15m": 15 * 60_000, "24h": 86_400_000, "7d": 7 * 86_400_000 };
// What each range draws: the finest series first.
const SERIES: Record<Range, { res: string; label: string; color: string }[]> = {
  "15m": [
    { res: "raw", label: "raw", color: "#7fb3ff" },
    { res: "1m", label: "1-min mean", color: "#ffb454" },
    { res: "5m", label: "5-min mean", color: "#d877ff" },
  ],
  "24h": [
    { res: "1m", label: "1-min mean", color: "#ffb454" },
    { res: "5m", label: "5-min mean", color: "#d877ff" },
  ],
  "7d": [
    { res: "5m", label: "5-min mean", color: "#d877ff" },
    { res: "1h", label: "1-hour mean", color: "#5fd7a7" },
  ],
};
const SEV_COLOR: Record<string, string> = { CRITICAL: "#ff4d6a", HIGH: "#ff8a3d", MEDIUM: "#ffd23f", LOW: "#9ad0ff" };
const REFRESH_MS = 60_000;

type Series = { ts: number[]; values: number[] };

export interface ChartData {
  range: Range;
  from: number;
  to: number;
  series: Record<string, Series>;
  anomalies: Anomaly[];
}

function toSeries(h: History): Series {
  const ts: number[] = [];
  const values: number[] = [];
  for (const p of h.points) {
    const v = p.value ?? p.mean;
    if (v === undefined || v === null) continue;
    ts.push(p.ts);
    values.push(v);
  }
  return { ts, values };
}

async function fetchRange(id: string, metric: string, range: Range, now: number): Promise<ChartData> {
  const from = now - SPAN_MS[range];
  const series: Record<string, Series> = {};
  const [histories, anomalies] = await Promise.all([
    Promise.all(
      SERIES[range].map((s) =>
        api<History>(`/machines/${encodeURIComponent(id)}/history${query({ metric, from, to: now, resolution: s.res })}`),
      ),
    ),
    api<Page<Anomaly>>(`/anomalies${query({ machine: id, metric, from, to: now, limit: 1000 })}`).catch(
      () => ({ items: [], next_cursor: null }) as Page<Anomaly>,
    ),
  ]);
  SERIES[range].forEach((s, i) => (series[s.res] = toSeries(histories[i])));
  return { range, from, to: now, series, anomalies: anomalies.items };
}

function aligned(data: ChartData): uPlot.AlignedData {
  const tables = SERIES[data.range].map((s) => [data.series[s.res].ts, data.series[s.res].values] as uPlot.AlignedData);
  return uPlot.join(tables);
}

export function MetricChart({
  id,
  metric,
  range,
  limits,
}: {
  id: string;
  metric: string;
  range: Range;
  limits: MetricLimits | undefined;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = useRef<ChartData | null>(null);
  const [state, setState] = useState<"loading" | "ready" | "error">("loading");
  const [error, setError] = useState("");
  const [points, setPoints] = useState(0);

  // Build the plot once per (machine, metric, range); fetch, then stream or refresh.
  useEffect(() => {
    const el = box.current!;
    let alive = true;
    setState("loading");
    const draws: uPlot.Plugin = {
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            ctx.save();
            // Limit lines.
            for (const l of limits?.limits ?? []) {
              for (const v of [l.low, l.high]) {
                if (v === null) continue;
                const y = u.valToPos(v, "y", true);
                if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
                ctx.strokeStyle = SEV_COLOR[l.severity] ?? "#f55";
                ctx.setLineDash([6, 4]);
                ctx.lineWidth = 1;
                ctx.beginPath();
                ctx.moveTo(u.bbox.left, y);
                ctx.lineTo(u.bbox.left + u.bbox.width, y);
                ctx.stroke();
              }
            }
            ctx.setLineDash([]);
            // Anomalies: a ring at each flagged reading.
            for (const a of data.current?.anomalies ?? []) {
              const x = u.valToPos(a.ts, "x", true);
              const y = u.valToPos(a.value, "y", true);
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.strokeStyle = SEV_COLOR[a.severity] ?? "#f55";
              ctx.lineWidth = 2;
              ctx.beginPath();
              ctx.arc(x, y, 5 * devicePixelRatio, 0, 2 * Math.PI);
              ctx.stroke();
            }
            ctx.restore();
          },
        ],
      },
    };
    const width = Math.max(280, el.clientWidth);
    const u = new uPlot(
      {
        width,
        height: 220,
        ms: 1,
        plugins: [draws],
        legend: { live: false },
        cursor: { drag: { x: true, y: false } },
        scales: {
          x: {
            time: true,
            // The whole range asked for, not just where data is: a fresh machine's few minutes
            // sit at the right end of its 15 minutes.
            range: (_u, min, max) => {
              const d = data.current;
              return d ? [d.from, Math.max(d.to, max)] : [min, max];
            },
          },
        },
        axes: [
          { stroke: "#aab", grid: { stroke: "#2a2f3a" }, ticks: { stroke: "#2a2f3a" } },
          { stroke: "#aab", grid: { stroke: "#2a2f3a" }, ticks: { stroke: "#2a2f3a" }, size: 60 },
        ],
        series: [
          {},
          ...SERIES[range].map((s, i) => ({
            label: s.label,
            stroke: s.color,
            width: i === 0 ? 1.25 : 2,
            spanGaps: true,
            // Raw readings are a line; in the live range the means are few: show their points.
            points: { show: range === "15m" && s.res !== "raw", size: 6 },
          })),
        ],
      },
      [[], ...SERIES[range].map(() => [])] as unknown as uPlot.AlignedData,
      el,
    );
    plot.current = u;

    const show = () => {
      if (!data.current) return;
      const first = SERIES[range][0].res;
      u.setData(aligned(data.current));
      setPoints(data.current.series[first].ts.length);
      (el as HTMLDivElement & { otData?: ChartData }).otData = data.current;
    };
    const load = async () => {
      try {
        const fresh = await fetchRange(id, metric, range, Date.now());
        if (!alive) return;
        if (range === "15m" && data.current) {
          // Keep the live tail the feed appended after the raw read was made.
          const mine = data.current.series.raw;
          const got = fresh.series.raw;
          const last = got.ts.length ? got.ts[got.ts.length - 1] : 0;
          mine.ts.forEach((t, i) => {
            if (t > last) {
              got.ts.push(t);
              got.values.push(mine.values[i]);
            }
          });
        }
        data.current = fresh;
        setState("ready");
        show();
      } catch (e) {
        if (!alive) return;
        setError((e as Error).message);
        setState("error");
      }
    };
    void load();
    const timer = window.setInterval(() => void load(), range === "15m" ? REFRESH_MS : 5 * REFRESH_MS);

    // Live: append each new reading of this metric as the feed delivers it.
    let unsubscribe = () => {};
    if (range === "15m") {
      let lastTs = 0;
      unsubscribe = plant.subscribeMachine(id, () => {
        const v = plant.machines.get(id)?.values[metric];
        const d = data.current;
        if (!v || !d || v.ts <= lastTs) return;
        lastTs = v.ts;
        const raw = d.series.raw;
        if (raw.ts.length && v.ts <= raw.ts[raw.ts.length - 1]) return;
        raw.ts.push(v.ts);
        raw.values.push(v.value);
        const cut = Date.now() - SPAN_MS["15m"];
        while (raw.ts.length && raw.ts[0] < cut) {
          raw.ts.shift();
          raw.values.shift();
        }
        show();
      });
    }
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(280, el.clientWidth), height: 220 }));
    resize.observe(el);
    return () => {
      alive = false;
      clearInterval(timer);
      unsubscribe();
      resize.disconnect();
      u.destroy();
      plot.current = null;
      data.current = null;
    };
  }, [id, metric, range, limits]);

  const unit = limits?.unit ?? "";
  return (
    <figure className="chart" data-testid={`chart-${metric}`} data-state={state} data-points={points}>
      <figcaption>
        <b>{metric}</b> {unit && <span className="muted">({unit})</span>}
        {state === "loading" && <span className="muted"> · loading…</span>}
        {state === "error" && (
          <span className="bad" role="alert">
            {" "}
            · {error}
          </span>
        )}
        {state === "ready" && points === 0 && <span className="muted"> · no readings in this range</span>}
      </figcaption>
      <div ref={box} className="chart-box" />
    </figure>
  );
}
