// Paths of the app (`ot api` answers every one of them with index.html):
//   /                  the fleet        /machines/{id}   one machine        /alarms   the alarms
import { useSyncExternalStore } from "react";

export type Route = { view: "fleet" } | { view: "machine"; id: string } | { view: "alarms" };

export function parse(path: string): Route {
  const m = path.match(/^\/machines\/([^/]+)\/?$/);
  if (m) return { view: "machine", id: decodeURIComponent(m[1]) };
  if (path.startsWith("/alarms")) return { view: "alarms" };
  return { view: "fleet" };
}

const listeners = new Set<() => void>();
window.addEventListener("popstate", () => listeners.forEach((l) => l()));

export function navigate(to: string): void {
  if (to === location.pathname + location.search) return;
  history.pushState(null, "", to);
  listeners.forEach((l) => l());
  window.scrollTo(0, 0);
}

export function useLocation(): string {
  return useSyncExternalStore(
    (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    () => location.pathname + location.search,
  );
}

/** A plain link the router handles: middle-click and modifiers still open a new tab. */
export function onLink(event: React.MouseEvent<HTMLAnchorElement>): void {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(event.currentTarget.getAttribute("href") ?? "/");
}
