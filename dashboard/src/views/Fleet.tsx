// The fleet: every machine as a tile (status as colour, icon and word), filtered by line, type and
// status, searched by id. The list re-renders only when machines come, go or change status; each
// tile re-renders alone when its machine changes.
import { memo, useEffect, useMemo, useRef, useState } from "react";
import { STATUSES, type Status } from "../api";
import { STATUS_ICON, ago, num } from "../format";
import { plant, useMachine, usePlant } from "../live";
import { sortMetrics, useLimits } from "../limits";
import { onLink } from "../router";

// One observer for every tile: a tile follows its machine's changes only while it is on screen
// (or near it), so 500 machines changing every second re-render the few dozen tiles in view.
const watchers = new Map<Element, (visible: boolean) => void>();
const observer =
  typeof IntersectionObserver === "undefined"
    ? null
    : new IntersectionObserver(
        (entries) => entries.forEach((e) => watchers.get(e.target)?.(e.isIntersecting)),
        { rootMargin: "200px" },
      );

function useOnScreen(ref: React.RefObject<Element | null>): boolean {
  const [visible, setVisible] = useState(true); // until the observer says otherwise
  useEffect(() => {
    const el = ref.current;
    if (!el || !observer) return;
    watchers.set(el, setVisible);
    observer.observe(el);
    return () => {
      observer.unobserve(el);
      watchers.delete(el);
    };
  }, [ref]);
  return visible;
}

const Tile = memo(function Tile({ id, units }: { id: string; units: Record<string, string> }) {
  const box = useRef<HTMLLIElement>(null);
  const m = useMachine(id, useOnScreen(box));
  if (!m) return <li ref={box} />;
  const metrics = sortMetrics(Object.keys(m.values)).slice(0, 3);
  const alerts = plant.alertCount(id);
  return (
    <li ref={box}>
      <a
        className={`tile status-${m.status}`}
        href={`/machines/${encodeURIComponent(id)}`}
        onClick={onLink}
        data-testid="machine-tile"
        data-machine={id}
        data-status={m.status}
        aria-label={`${id}, ${m.status}, ${m.type}, ${m.line}${alerts ? `, ${alerts} open alerts` : ""}`}
      >
        <div className="tile-head">
          <span className="tile-id">{id}</span>
          <span className="badge" data-testid="status-badge">
            <span aria-hidden="true">{STATUS_ICON[m.status]}</span> {m.status}
          </span>
        </div>
        <div className="tile-meta">
          {m.type} · {m.line}
          {alerts > 0 && <span className="tile-alerts"> · {alerts} ⚠</span>}
        </div>
        <dl className="tile-values">
          {metrics.map((name) => (
            <div key={name}>
              <dt>{name}</dt>
              <dd>
                {num(m.values[name].value)} <small>{units[name] ?? ""}</small>
              </dd>
            </div>
          ))}
        </dl>
        <div className="tile-seen">seen {ago(m.last_seen)}</div>
      </a>
    </li>
  );
});

export function Fleet() {
  usePlant();
  const limits = useLimits();
  const [line, setLine] = useState("");
  const [type, setType] = useState("");
  const [status, setStatus] = useState<Status | "">("");
  const [search, setSearch] = useState("");
  const units = useMemo(
    () => Object.fromEntries(Object.entries(limits ?? {}).map(([k, v]) => [k, v.unit])),
    [limits],
  );
  const all = [...plant.machines.values()];
  const lines = [...new Set(all.map((m) => m.line))].sort();
  const types = [...new Set(all.map((m) => m.type))].sort();
  const needle = search.trim().toLowerCase();
  const shown = all
    .filter(
      (m) =>
        (!line || m.line === line) &&
        (!type || m.type === type) &&
        (!status || m.status === status) &&
        (!needle || m.machine_id.includes(needle)),
    )
    .map((m) => m.machine_id)
    .sort();

  return (
    <section aria-labelledby="fleet-title">
      <div className="view-head">
        <h1 id="fleet-title">Fleet</h1>
        <form className="filters" role="search" onSubmit={(e) => e.preventDefault()}>
          <label>
            Search
            <input
              type="search"
              value={search}
              onChange={(e) => setSearch(e.target.value)}
              placeholder="machine id"
              data-testid="search"
            />
          </label>
          <label>
            Line
            <select value={line} onChange={(e) => setLine(e.target.value)} data-testid="filter-line">
              <option value="">all</option>
              {lines.map((l) => (
                <option key={l}>{l}</option>
              ))}
            </select>
          </label>
          <label>
            Type
            <select value={type} onChange={(e) => setType(e.target.value)} data-testid="filter-type">
              <option value="">all</option>
              {types.map((t) => (
                <option key={t}>{t}</option>
              ))}
            </select>
          </label>
          <label>
            Status
            <select value={status} onChange={(e) => setStatus(e.target.value as Status | "")} data-testid="filter-status">
              <option value="">all</option>
              {STATUSES.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          </label>
        </form>
      </div>
      {!plant.loaded && plant.error && (
        <p className="state error" role="alert">
          Cannot read the plant: {plant.error}
        </p>
      )}
      {!plant.loaded && !plant.error && <p className="state">Loading the fleet…</p>}
      {plant.loaded && all.length === 0 && (
        <p className="state">No machine has reported yet. Start the simulator or send readings to the webhook.</p>
      )}
      {plant.loaded && all.length > 0 && shown.length === 0 && <p className="state">No machine matches these filters.</p>}
      {shown.length > 0 && (
        <>
          <p className="muted count" data-testid="shown-count">
            {shown.length} of {all.length} machines
          </p>
          <ul className="grid" aria-label="Machines">
            {shown.map((id) => (
              <Tile key={id} id={id} units={units} />
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
