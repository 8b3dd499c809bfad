// The search box: every word typed must match somewhere in the row
// (case-insensitive). `state:running` style words match one field only.
import type { Container, Image, Network, Volume } from "./ipc";

function words(query: string): string[] {
  return query.toLowerCase().split(/\s+/).filter(Boolean);
}

function matchAll(query: string, fields: Record<string, string>): boolean {
  const haystack = Object.values(fields).join("\n").toLowerCase();
  return words(query).every((w) => {
    const colon = w.indexOf(":");
    if (colon > 0) {
      const field = fields[w.slice(0, colon)];
      if (field !== undefined) return field.toLowerCase().includes(w.slice(colon + 1));
    }
    return haystack.includes(w);
  });
}

export function containerMatches(c: Container, query: string): boolean {
  return matchAll(query, {
    name: c.name,
    image: c.image,
    id: c.id.slice(0, 12),
    state: c.state,
    status: c.status,
    stack: c.group?.name ?? "",
    service: c.group?.service ?? "",
    labels: Object.entries(c.labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(" "),
  });
}

export function imageMatches(i: Image, query: string): boolean {
  return matchAll(query, { tags: i.tags.join(" "), id: i.id.replace("sha256:", "").slice(0, 12) });
}

export function volumeMatches(v: Volume, users: string[], query: string): boolean {
  return matchAll(query, {
    name: v.name,
    driver: v.driver,
    users: users.join(" "),
    labels: Object.entries(v.labels)
      .map(([k, val]) => `${k}=${val}`)
      .join(" "),
  });
}

export function networkMatches(n: Network, query: string): boolean {
  return matchAll(query, { name: n.name, driver: n.driver, scope: n.scope });
}
