// Units, valid ranges and alert limits per metric (`GET /api/v1/limits`), fetched once.
import { useEffect, useState } from "react";
import { type MetricLimits, api } from "./api";

let cache: Promise<Record<string, MetricLimits>> | null = null;

export function loadLimits(): Promise<Record<string, MetricLimits>> {
  cache ??= api<{ metrics: Record<string, MetricLimits> }>("/limits")
    .then((r) => r.metrics)
    .catch((e) => {
      cache = null;
      throw e;
    });
  return cache;
}

export function useLimits(): Record<string, MetricLimits> | null {
  const [limits, setLimits] = useState<Record<string, MetricLimits> | null>(null);
  useEffect(() => {
    let alive = true;
    loadLimits().then((l) => alive && setLimits(l), () => undefined);
    return () => {
      alive = false;
    };
  }, []);
  return limits;
}

export const METRIC_ORDER = [
  "temperature",
  "vibration",
  "pressure",
  "level",
  "flow",
  "rpm",
  "current",
  "voltage",
  "humidity",
  "energy",
];

export function sortMetrics(names: string[]): string[] {
  const rank = (m: string) => {
    const i = METRIC_ORDER.indexOf(m);
    return i < 0 ? METRIC_ORDER.length : i;
  };
  return [...names].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}
