import type { Severity, Status } from "./api";

export const STATUS_ICON: Record<Status, string> = {
  ONLINE: "●",
  ANOMALY: "▲",
  FAULT: "✖",
  OFFLINE: "○",
};

export const SEVERITY_ICON: Record<Severity, string> = {
  CRITICAL: "‼",
  HIGH: "!",
  MEDIUM: "▲",
  LOW: "•",
};

export function num(v: number | null | undefined, digits = 2): string {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const abs = Math.abs(v);
  if (abs >= 10000) return Math.round(v).toLocaleString("en");
  if (abs >= 100) return v.toFixed(Math.min(1, digits));
  return v.toFixed(digits);
}

export function clock(ms: number | null | undefined): string {
  if (!ms) return "–";
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}

export function dateTime(ms: number | null | undefined): string {
  if (!ms) return "–";
  const d = new Date(ms);
  return `${d.toLocaleDateString("en-CA")} ${d.toLocaleTimeString("en-GB", { hour12: false })}`;
}

export function ago(ms: number | null | undefined, now = Date.now()): string {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}
