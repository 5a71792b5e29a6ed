// The operator API (docs/api.md): one fetch wrapper that sends the key kept for this browser
// session, and the shapes of the answers the dashboard reads.

export type Status = "ONLINE" | "OFFLINE" | "ANOMALY" | "FAULT";
export const STATUSES: Status[] = ["FAULT", "ANOMALY", "OFFLINE", "ONLINE"];
export type Severity = "CRITICAL" | "HIGH" | "MEDIUM" | "LOW";
export const SEVERITIES: Severity[] = ["CRITICAL", "HIGH", "MEDIUM", "LOW"];

export interface Value {
  value: number;
  ts: number;
}

export interface Machine {
  machine_id: string;
  type: string;
  line: string;
  status: Status;
  status_code: number;
  last_seen: number;
  values: Record<string, Value>;
}

export interface Alert {
  alert_id: string;
  rule: string;
  machine_id: string;
  line_id: string | null;
  metric: string;
  severity: Severity;
  original_severity?: Severity;
  value: number | null;
  threshold: number | null;
  opened_ms: number;
  cleared_ms: number | null;
  status: "ACTIVE_UNACK" | "ACTIVE_ACK" | "CLEARED_UNACK" | "CLEARED_ACK";
  acknowledged: boolean;
  ack_by: string | null;
  ack_ms: number | null;
  ack_note: string | null;
  assignee: string | null;
  manual_clear: boolean;
  event?: string;
  at_ms?: number;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface HistoryPoint {
  ts: number;
  value?: number;
  mean?: number;
  min?: number;
  max?: number;
  count?: number;
}

export interface History {
  machine_id: string;
  metric: string;
  resolution: string;
  step_ms: number | null;
  from: number;
  to: number;
  points: HistoryPoint[];
}

export interface Anomaly {
  ts: number;
  metric: string;
  value: number;
  severity: Severity;
  detector: string;
  score: number;
}

export interface MetricLimits {
  unit: string;
  range: [number, number];
  limits: { rule: string; severity: Severity; low: number | null; high: number | null; consecutive: number }[];
}

export interface Readiness {
  status: "ok" | "degraded" | "down";
  failing: string[];
  checks: Record<string, { status: string; detail?: string; [k: string]: unknown }>;
}

export interface DataHealth {
  at_ms: number;
  readings_per_s: number | null;
  state_writer_lag: number | null;
  metrics_age_s: number | null;
  dead_letters: number | null;
  last_materialization_ms: number | null;
  asset_checks: AssetChecks;
  dagster_url: string;
}

export interface FailingCheck {
  asset: string;
  check: string;
  status: string;
  severity: string | null;
  partition: string | null;
  description: string | null;
}

/** The pipeline's asset checks on their assets' latest materializations (or why unknown). */
export interface AssetChecks {
  total?: number;
  executed?: number;
  failing?: FailingCheck[];
  error?: string;
}

const KEY = "ot.apiKey";

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  if (key) allowReads();
  window.dispatchEvent(new Event("ot-key"));
}

// REST reads wait until reading is known to be allowed: a key was typed, or the live stream
// accepted us without one (anonymous reads). Without this, a first visit without a key would
// fire a burst of 401s before the stream's own refusal asks for the key.
let allow: () => void = () => undefined;
const readsAllowed = new Promise<void>((resolve) => (allow = resolve));

export function allowReads(): void {
  allow();
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

/** GET or POST under /api/v1; problem+json answers become an ApiError with their detail. */
export async function api<T>(path: string, init: RequestInit = {}, okStatuses: number[] = []): Promise<T> {
  if (!apiKey()) await readsAllowed;
  const headers = new Headers(init.headers);
  const key = apiKey();
  if (key) headers.set("X-API-Key", key);
  if (init.body) headers.set("Content-Type", "application/json");
  let response: Response;
  try {
    response = await fetch(`/api/v1${path}`, { ...init, headers });
  } catch (e) {
    throw new ApiError(0, "network", `the API does not answer (${(e as Error).message})`);
  }
  if (!response.ok && !okStatuses.includes(response.status)) {
    let detail = response.statusText;
    let type = "http-error";
    try {
      const problem = await response.json();
      detail = problem.detail ?? detail;
      type = String(problem.type ?? type).replace("urn:ot:problem:", "");
    } catch {
      /* not problem+json */
    }
    if (response.status === 401) window.dispatchEvent(new Event("ot-need-key"));
    throw new ApiError(response.status, type, detail);
  }
  return (await response.json()) as T;
}

export function query(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const alertPath = (id: string, action = "") =>
  `/alerts/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;
