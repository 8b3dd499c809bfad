// Human numbers for the tables.

export function bytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = Math.max(0, n);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Sizes of files and volumes, in powers of 1024 as `du -h` and file managers show them. */
export function binaryBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** `3 minutes ago`; pass the window's clock (`store.now`) so it re-renders. */
export function ago(unixSeconds: number, nowMs: number = Date.now()): string {
  const secs = Math.max(0, nowMs / 1000 - unixSeconds);
  const steps: [number, string][] = [
    [60 * 60 * 24 * 365, "year"],
    [60 * 60 * 24 * 30, "month"],
    [60 * 60 * 24, "day"],
    [60 * 60, "hour"],
    [60, "minute"],
  ];
  for (const [size, unit] of steps) {
    const n = Math.floor(secs / size);
    if (n >= 1) return `${n} ${unit}${n === 1 ? "" : "s"} ago`;
  }
  return "just now";
}

export function shortId(id: string): string {
  return id.replace(/^sha256:/, "").slice(0, 12);
}

/**
 * What a container is doing, in words that stay true while the window is
 * open. Docker's own status text ("Up 3 minutes") is only true when read,
 * and the live inventory is not re-read without an event, so the relative
 * part is left out here (the full text is in the row's tooltip).
 */
export function containerStatus(state: string, dockerStatus: string): string {
  const health = /\((healthy|unhealthy|health: starting)\)/.exec(dockerStatus)?.[1];
  const exitCode = /^Exited \((-?\d+)\)/.exec(dockerStatus)?.[1];
  switch (state) {
    case "running":
      return health ? `Running (${health})` : "Running";
    case "exited":
      return exitCode !== undefined ? `Exited (${exitCode})` : "Exited";
    default:
      return state[0].toUpperCase() + state.slice(1);
  }
}
