import { useEffect, useState } from "react";
import { apiKey, setApiKey } from "./api";
import { plant, usePlant } from "./live";
import { onLink, parse, useLocation } from "./router";
import { Figures, HealthStrip, useDataHealth } from "./views/Health";
import { Fleet } from "./views/Fleet";
import { MachineView } from "./views/Machine";
import { Alarms } from "./views/Alarms";

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  polling: "Polling (no live stream)",
  offline: "Offline",
};

function ConnectionBadge() {
  usePlant();
  const c = plant.connection;
  return (
    <span className={`conn conn-${c}`} role="status" aria-live="polite" data-testid="connection" data-state={c}>
      <span aria-hidden="true" className="dot" />
      {CONNECTION_TEXT[c]}
    </span>
  );
}

function KeyDialog({ onClose }: { onClose: () => void }) {
  const [value, setValue] = useState("");
  return (
    <div className="dialog-backdrop" role="presentation" onClick={onClose}>
      <form
        className="dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby="key-title"
        onClick={(e) => e.stopPropagation()}
        onSubmit={(e) => {
          e.preventDefault();
          setApiKey(value.trim() || null);
          onClose();
        }}
      >
        <h2 id="key-title">API key</h2>
        <p className="muted">
          Kept for this browser session only (sessionStorage). Reading needs a <code>read</code> key unless the
          server allows anonymous reads; acknowledging, assigning and clearing alarms need an <code>operate</code>{" "}
          key (<code>ot api keys new NAME --role operate</code>).
        </p>
        <label>
          Key
          <input
            autoFocus
            type="password"
            autoComplete="off"
            value={value}
            onChange={(e) => setValue(e.target.value)}
            placeholder="ot_…"
            data-testid="key-input"
          />
        </label>
        <div className="row">
          <button type="submit" className="primary" data-testid="key-save">
            Use this key
          </button>
          {apiKey() && (
            <button
              type="button"
              onClick={() => {
                setApiKey(null);
                onClose();
              }}
            >
              Forget the key
            </button>
          )}
          <button type="button" onClick={onClose}>
            Cancel
          </button>
        </div>
      </form>
    </div>
  );
}

export function App() {
  const path = useLocation();
  const route = parse(path);
  const [askKey, setAskKey] = useState(false);
  const [hasKey, setHasKey] = useState(Boolean(apiKey()));
  const health = useDataHealth();

  useEffect(() => {
    plant.start();
    const need = () => setAskKey(true);
    const changed = () => {
      setHasKey(Boolean(apiKey()));
      plant.restart();
    };
    window.addEventListener("ot-need-key", need);
    window.addEventListener("ot-key", changed);
    return () => {
      plant.stop();
      window.removeEventListener("ot-need-key", need);
      window.removeEventListener("ot-key", changed);
    };
  }, []);

  useEffect(() => {
    if (!askKey) return;
    const esc = (e: KeyboardEvent) => e.key === "Escape" && setAskKey(false);
    window.addEventListener("keydown", esc);
    return () => window.removeEventListener("keydown", esc);
  }, [askKey]);

  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <div className="brand">
          <span aria-hidden="true" className="logo">
            ◧
          </span>{" "}
          OT plant
        </div>
        <nav aria-label="Views">
          <a href="/" onClick={onLink} aria-current={route.view === "fleet" ? "page" : undefined}>
            Fleet
          </a>
          <a href="/alarms" onClick={onLink} aria-current={route.view === "alarms" ? "page" : undefined}>
            Alarms
          </a>
        </nav>
        <div className="top-right">
          <ConnectionBadge />
          <button type="button" onClick={() => setAskKey(true)} data-testid="key-button">
            {hasKey ? "Key ✓" : "API key"}
          </button>
        </div>
      </header>
      <Figures health={health.data} />
      <HealthStrip polled={health} />
      <main id="main" tabIndex={-1}>
        {route.view === "fleet" && <Fleet />}
        {route.view === "machine" && <MachineView id={route.id} />}
        {route.view === "alarms" && <Alarms />}
      </main>
      {askKey && <KeyDialog onClose={() => setAskKey(false)} />}
    </>
  );
}
