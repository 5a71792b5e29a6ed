// The alarm panel: active alarms by severity, live from the change feed, with acknowledge (and a
// note), assign and clear (an operate key); and the history with filters and pages.
import { useState } from "react";
import { type Alert, type Page, SEVERITIES, type Severity, ApiError, alertPath, api, apiKey, query } from "../api";
import { SEVERITY_ICON, ago, dateTime, num } from "../format";
import { plant, usePlant } from "../live";
import { onLink } from "../router";
import { usePoll } from "../usePoll";

function Actions({ alert }: { alert: Alert }) {
  const [note, setNote] = useState("");
  const [assignee, setAssignee] = useState(alert.assignee ?? "");
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<string | null>(null);
  const act = async (action: "ack" | "assign" | "clear", body?: object) => {
    setBusy(true);
    setMessage(null);
    try {
      await api(alertPath(alert.alert_id, action), { method: "POST", body: body ? JSON.stringify(body) : undefined });
      setMessage(null);
    } catch (e) {
      const err = e as ApiError;
      if (err.status === 401 || err.status === 403) {
        setMessage(`${err.message} — an operate key is needed (API key, top right)`);
        if (err.status === 403 || !apiKey()) window.dispatchEvent(new Event("ot-need-key"));
      } else setMessage(err.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="actions">
      {!alert.acknowledged && (
        <form
          className="inline"
          onSubmit={(e) => {
            e.preventDefault();
            void act("ack", note.trim() ? { note: note.trim() } : undefined);
          }}
        >
          <input
            aria-label={`note for ${alert.alert_id}`}
            placeholder="note (optional)"
            value={note}
            onChange={(e) => setNote(e.target.value)}
            data-testid="ack-note"
          />
          <button type="submit" className="primary" disabled={busy} data-testid="ack">
            Acknowledge
          </button>
        </form>
      )}
      <form
        className="inline"
        onSubmit={(e) => {
          e.preventDefault();
          void act("assign", { assignee: assignee.trim() || null });
        }}
      >
        <input
          aria-label={`assignee for ${alert.alert_id}`}
          placeholder="assignee"
          value={assignee}
          onChange={(e) => setAssignee(e.target.value)}
          data-testid="assignee"
        />
        <button type="submit" disabled={busy} data-testid="assign">
          Assign
        </button>
      </form>
      {alert.manual_clear && (
        <button type="button" disabled={busy} onClick={() => void act("clear")} data-testid="clear">
          Clear
        </button>
      )}
      {message && (
        <p className="bad" role="alert">
          {message}
        </p>
      )}
    </div>
  );
}

function AlertRow({ alert, actions }: { alert: Alert; actions: boolean }) {
  return (
    <li className={`alarm sev-${alert.severity}`} data-testid="alarm" data-alert={alert.alert_id} data-status={alert.status}>
      <div className="alarm-main">
        <span className="sev-tag">
          <span aria-hidden="true">{SEVERITY_ICON[alert.severity]}</span> {alert.severity}
        </span>
        <a href={`/machines/${encodeURIComponent(alert.machine_id)}`} onClick={onLink}>
          {alert.machine_id}
        </a>
        <b>{alert.rule}</b>
        <span>
          {alert.metric !== "*" && alert.metric} {alert.value !== null && <>= {num(alert.value)}</>}
          {alert.threshold !== null && <span className="muted"> (limit {num(alert.threshold)})</span>}
        </span>
        <span className="muted" title={dateTime(alert.opened_ms)}>
          opened {ago(alert.opened_ms)}
        </span>
        <span className="status-word" data-testid="alarm-status">
          {alert.status.replace("_", " ").toLowerCase()}
        </span>
        {alert.ack_by && (
          <span className="muted">
            ack {alert.ack_by}
            {alert.ack_note && `: “${alert.ack_note}”`}
          </span>
        )}
        {alert.assignee && <span className="muted">→ {alert.assignee}</span>}
      </div>
      {actions && <Actions alert={alert} />}
    </li>
  );
}

function Active() {
  usePlant();
  const all = [...plant.alerts.values()];
  return (
    <section aria-labelledby="active-title" data-testid="active-alarms">
      <h2 id="active-title">Active ({all.length})</h2>
      {!plant.loaded && <p className="state">Loading alarms…</p>}
      {plant.loaded && all.length === 0 && <p className="state">No active alarm.</p>}
      {SEVERITIES.map((sev) => {
        const items = all.filter((a) => a.severity === sev).sort((a, b) => b.opened_ms - a.opened_ms);
        if (!items.length) return null;
        return (
          <div key={sev} className={`sev-group sev-${sev}`}>
            <h3>
              <span aria-hidden="true">{SEVERITY_ICON[sev]}</span> {sev} ({items.length})
            </h3>
            <ul className="alarms">
              {items.map((a) => (
                <AlertRow key={a.alert_id} alert={a} actions />
              ))}
            </ul>
          </div>
        );
      })}
    </section>
  );
}

const STATES = ["any", "active", "cleared", "ack", "unack"];
const PAGE = 25;

function HistoryList() {
  const [state, setState] = useState("cleared");
  const [severity, setSeverity] = useState<Severity | "">("");
  const [machine, setMachine] = useState("");
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1];
  const params = { state, severity, machine: machine.trim(), limit: PAGE, cursor };
  const polled = usePoll(() => api<Page<Alert>>(`/alerts${query(params)}`), 0, [state, severity, machine, cursor]);
  const reset = () => setCursors([null]);
  return (
    <section aria-labelledby="history-title" data-testid="alarm-history">
      <h2 id="history-title">History</h2>
      <form className="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          State
          <select
            value={state}
            onChange={(e) => {
              setState(e.target.value);
              reset();
            }}
          >
            {STATES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Severity
          <select
            value={severity}
            onChange={(e) => {
              setSeverity(e.target.value as Severity | "");
              reset();
            }}
          >
            <option value="">all</option>
            {SEVERITIES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Machine
          <input
            value={machine}
            placeholder="machine id"
            onChange={(e) => {
              setMachine(e.target.value);
              reset();
            }}
          />
        </label>
      </form>
      {polled.loading && <p className="state">Loading…</p>}
      {polled.error && (
        <p className="state error" role="alert">
          {polled.error}
        </p>
      )}
      {polled.data && polled.data.items.length === 0 && <p className="state">No alarm matches.</p>}
      <ul className="alarms">
        {polled.data?.items.map((a) => <AlertRow key={a.alert_id} alert={a} actions={false} />)}
      </ul>
      <div className="row pager">
        <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
          ← Newer
        </button>
        <span className="muted">page {cursors.length}</span>
        <button
          type="button"
          disabled={!polled.data?.next_cursor}
          onClick={() => setCursors([...cursors, polled.data!.next_cursor])}
        >
          Older →
        </button>
      </div>
    </section>
  );
}

export function Alarms() {
  return (
    <div className="alarms-view">
      <h1>Alarms</h1>
      <Active />
      <HistoryList />
    </div>
  );
}
