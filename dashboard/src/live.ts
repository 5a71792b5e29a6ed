// The live plant: every machine and every open alert, kept current by the WebSocket change feed
// (`/api/v1/stream`), or by polling the REST API while the socket cannot be had.
//
// Updates patch what changed: a machine's record is replaced only when a change names it, and
// only that machine's subscribers are told, once per animation frame. The grid's tiles each
// subscribe to their own machine, so 500 machines changing every second re-render 500 small
// tiles, never the whole page.

import { useCallback, useSyncExternalStore } from "react";
import { type Alert, type Machine, type Page, type Status, allowReads, api, apiKey } from "./api";

export type Connection = "connecting" | "live" | "polling" | "offline";

type Listener = () => void;

interface RawMachine {
  machine_id: string;
  machine_type?: string;
  type?: string;
  line_id?: string;
  line?: string;
  status?: Status;
  status_code?: number;
  last_seen?: number;
  values?: Machine["values"];
}

const POLL_MS = 3000;
const RETRY_MS = [500, 1000, 2000, 5000, 10000];

export class Plant {
  machines = new Map<string, Machine>();
  alerts = new Map<string, Alert>(); // active alerts only
  connection: Connection = "connecting";
  loaded = false;
  error: string | null = null;
  lastMessageMs = 0;
  /** Bumped when membership, a status, a line or a type changes (what the grid filters on). */
  shape = 0;
  alertsVersion = 0;
  changesSeen = 0;
  /** Bumped whenever the plant's listeners are told (shape, alerts, connection). */
  version = 0;
  private pollingMode = false;

  private machineListeners = new Map<string, Set<Listener>>();
  private listeners = new Set<Listener>();
  private dirty = new Set<string>();
  private dirtyAll = false;
  private frame = 0;
  private ws: WebSocket | null = null;
  private lastId: string | null = null;
  private failures = 0;
  private pollTimer = 0;
  private retryTimer = 0;
  private stopped = false;
  private refused = false;

  // -- subscriptions ------------------------------------------------------------------------
  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  subscribeMachine(id: string, listener: Listener): () => void {
    let set = this.machineListeners.get(id);
    if (!set) this.machineListeners.set(id, (set = new Set()));
    set.add(listener);
    return () => set!.delete(listener);
  }

  private schedule(): void {
    if (this.frame) return;
    const run = () => {
      this.frame = 0;
      const ids = this.dirty;
      this.dirty = new Set();
      for (const id of ids) this.machineListeners.get(id)?.forEach((l) => l());
      if (this.dirtyAll) {
        this.dirtyAll = false;
        this.version++;
        this.listeners.forEach((l) => l());
      }
    };
    // A hidden tab gets no animation frames: fall back to a timer so state stays current.
    this.frame = document.hidden ? window.setTimeout(run, 250) : requestAnimationFrame(run);
  }

  private touchAll(): void {
    this.dirtyAll = true;
    this.schedule();
  }

  alertCount(machineId: string): number {
    let n = 0;
    for (const a of this.alerts.values()) if (a.machine_id === machineId) n++;
    return n;
  }

  // -- applying what the API sends ----------------------------------------------------------
  private merge(raw: RawMachine, replace: boolean): void {
    const old = replace ? undefined : this.machines.get(raw.machine_id);
    const next: Machine = {
      machine_id: raw.machine_id,
      type: raw.machine_type ?? raw.type ?? old?.type ?? "",
      line: raw.line_id ?? raw.line ?? old?.line ?? "",
      status: raw.status ?? old?.status ?? "ONLINE",
      status_code: raw.status_code ?? old?.status_code ?? 0,
      last_seen: raw.last_seen ?? old?.last_seen ?? 0,
      values: old ? { ...old.values, ...(raw.values ?? {}) } : { ...(raw.values ?? {}) },
    };
    if (!old || old.status !== next.status || old.line !== next.line || old.type !== next.type) {
      this.shape++;
      this.dirtyAll = true;
    }
    this.machines.set(next.machine_id, next);
    this.dirty.add(next.machine_id);
  }

  private applyAlert(alert: Alert): void {
    if (alert.status.startsWith("CLEARED")) this.alerts.delete(alert.alert_id);
    else this.alerts.set(alert.alert_id, alert);
    this.alertsVersion++;
    this.dirtyAll = true;
    this.dirty.add(alert.machine_id);
  }

  private snapshot(machines: RawMachine[], alerts: Alert[]): void {
    this.machines.clear();
    this.alerts.clear();
    for (const m of machines) this.merge(m, true);
    for (const a of alerts) this.applyAlert(a);
    for (const id of this.machineListeners.keys()) this.dirty.add(id);
    this.shape++;
    this.loaded = true;
    this.error = null;
    this.touchAll();
  }

  // -- the WebSocket, with polling as the fallback ------------------------------------------
  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    clearTimeout(this.pollTimer);
    clearTimeout(this.retryTimer);
  }

  /** A new key (or none): start over with it. */
  restart(): void {
    this.refused = false;
    this.error = null;
    this.ws?.close();
    this.ws = null;
    this.lastId = null;
    this.failures = 0;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  private setConnection(c: Connection): void {
    if (this.connection !== c) {
      this.connection = c;
      this.touchAll();
    }
  }

  private connect(): void {
    if (this.stopped) return;
    if (!this.pollingMode) this.setConnection("connecting");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let ws: WebSocket;
    try {
      ws = new WebSocket(`${proto}//${location.host}/api/v1/stream`);
    } catch {
      this.socketFailed();
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      // First-message subscription: the key stays out of the URL and the logs.
      const key = apiKey();
      ws.send(
        JSON.stringify({
          type: "subscribe",
          ...(key ? { key } : {}),
          states: true,
          alerts: true,
          ...(this.lastId ? { since: this.lastId } : {}),
        }),
      );
    };
    ws.onmessage = (event) => {
      const frame = JSON.parse(event.data as string);
      this.lastMessageMs = Date.now();
      if (frame.last_id) this.lastId = frame.last_id;
      switch (frame.type) {
        case "subscribed":
          opened = true;
          allowReads();
          this.failures = 0;
          clearTimeout(this.pollTimer);
          this.pollingMode = false;
          this.setConnection("live");
          break;
        case "snapshot":
          this.snapshot(frame.machines, frame.alerts ?? []);
          break;
        case "changes":
          for (const change of frame.changes) {
            if (change.type === "machine") this.merge(change.data, false);
            else if (change.type === "alert") this.applyAlert(change.data);
          }
          this.changesSeen += frame.changes.length;
          this.schedule();
          break;
        case "error":
          this.error = frame.problem?.detail ?? "the stream refused the subscription";
          if (frame.problem?.status === 401 || frame.problem?.status === 403) {
            // Refused: wait for a (new) key instead of retrying or polling with the same one.
            this.refused = true;
            window.dispatchEvent(new Event("ot-need-key"));
          }
          this.touchAll();
          break;
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return; // replaced by a restart
      this.ws = null;
      if (this.refused) {
        this.setConnection("offline");
        return;
      }
      if (!opened) this.failures++;
      this.socketFailed();
    };
  }

  private socketFailed(): void {
    if (this.stopped) return;
    // After two failed attempts in a row, read by polling until the socket comes back.
    if (this.failures >= 2 && !this.pollingMode) {
      this.pollingMode = true;
      allowReads(); // no stream to tell: let REST answer (a 401 there asks for the key)
      this.setConnection("polling");
      void this.poll();
    } else if (!this.pollingMode) {
      this.setConnection("connecting");
    }
    const delay = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
    this.retryTimer = window.setTimeout(() => this.connect(), delay);
  }

  private async poll(): Promise<void> {
    if (!this.pollingMode || this.stopped) return;
    try {
      const machines: RawMachine[] = [];
      let cursor: string | null = null;
      do {
        const page: Page<RawMachine> = await api(`/machines?limit=1000${cursor ? `&cursor=${cursor}` : ""}`);
        machines.push(...page.items);
        cursor = page.next_cursor;
      } while (cursor);
      const alerts = await api<Page<Alert>>("/alerts?state=active&limit=1000");
      this.lastId = null; // a snapshot from REST: the socket starts afresh
      this.lastMessageMs = Date.now();
      if (!this.pollingMode) return; // the socket came back meanwhile
      this.snapshot(machines, alerts.items);
      this.setConnection("polling");
    } catch (e) {
      this.error = (e as Error).message;
      this.setConnection("offline");
      this.touchAll();
    }
    this.pollTimer = window.setTimeout(() => void this.poll(), POLL_MS);
  }
}

export const plant = new Plant();

/** The plant as a whole: re-renders on shape, alert or connection changes (not on values). */
export function usePlant(): number {
  return useSyncExternalStore(plant.subscribe, () => plant.version);
}

const ignore = () => () => undefined;

/** One machine: re-renders when a change names it (while `follow`; otherwise it shows the
 * machine as it was when it last rendered, and catches up as soon as `follow` is true again). */
export function useMachine(id: string, follow = true): Machine | undefined {
  const subscribe = useCallback((l: Listener) => plant.subscribeMachine(id, l), [id]);
  return useSyncExternalStore(follow ? subscribe : ignore, () => plant.machines.get(id));
}
