// The window's copy of every environment's live view. It follows the same
// rules as the backend's `LiveViews` (crates/core/src/live.rs): updates carry
// whole objects, a snapshot replaces everything, so applying an update twice
// or racing the first `environments()` call is harmless.
import {
  environments as fetchEnvironments,
  onLiveUpdate,
  onRedeploy,
  onServices,
  services as fetchServices,
  type ServicesUpdate,
  type RedeployUpdate,
  type Container,
  type EnvironmentView,
  type Inventory,
  type InventoryChange,
  type LiveUpdate,
  type Problem,
} from "./ipc";

export type Section = "services" | "containers" | "images" | "volumes" | "networks";

/** What the detail panel shows: a container (name or ID), a service's slot
 * (STACK/SERVICE/SLOT) or a whole service's logs (STACK/SERVICE). */
export type Detail = { env: string; target: string; title: string; service: boolean; tab: "logs" | "terminal" | "inspect" };

class Store {
  /** Views by environment name; replaced, not mutated, so lists re-render cheaply. */
  views = $state.raw<Record<string, EnvironmentView>>({});
  selected = $state<string | null>(null);
  section = $state<Section>("containers");
  /** A stack or Compose project picked in the sidebar, or null for all. */
  group = $state<string | null>(null);
  query = $state("");
  loadError = $state<Problem | null>(null);
  ready = $state(false);
  /** The window's clock for relative times ("3 minutes ago"), ticking every 30 s. */
  now = $state(Date.now());
  /** The container detail panel, when open. */
  detail = $state<Detail | null>(null);
  /** The volume browser, when open. */
  volume = $state<{ env: string; name: string } | null>(null);
  /** The environment form: adding (null name) or editing one. */
  environmentForm = $state<{ editing: string | null } | null>(null);
  /** Each environment's services as the backend last pushed them. */
  services = $state.raw<Record<string, ServicesUpdate>>({});
  /** What automatic redeploys did, newest last (the last 20). */
  redeploys = $state.raw<RedeployUpdate[]>([]);

  get ordered(): EnvironmentView[] {
    return Object.values(this.views).sort(
      (a, b) => Number(b.isDefault) - Number(a.isDefault) || a.spec.name.localeCompare(b.spec.name),
    );
  }

  get current(): EnvironmentView | null {
    return this.selected ? (this.views[this.selected] ?? null) : null;
  }

  /** Updates that arrive before the first list; replayed onto it. */
  private early: LiveUpdate[] | null = [];

  async start(): Promise<void> {
    setInterval(() => (this.now = Date.now()), 30_000);
    // Listen first, then read: an update sent while the list is on its way is
    // kept and replayed onto it (updates are idempotent), so none is lost.
    await onLiveUpdate((u) => (this.early ? this.early.push(u) : this.apply(u)));
    await onServices((u) => (this.services = { ...this.services, [u.environment]: u }));
    await onRedeploy((u) => (this.redeploys = [...this.redeploys, u].slice(-20)));
    try {
      const list = await fetchEnvironments();
      this.views = Object.fromEntries(list.map((v) => [v.spec.name, v]));
      this.selected ??= list.find((v) => v.isDefault)?.spec.name ?? list[0]?.spec.name ?? null;
    } catch (e) {
      this.loadError = e as Problem;
    }
    const early = this.early ?? [];
    this.early = null;
    for (const u of early) this.apply(u);
    this.ready = true;
  }

  /** Reads an environment's services once (the first time a page shows
   * them, and after an operation); changes after that are pushed. */
  async loadServices(env: string): Promise<void> {
    try {
      const services = await fetchServices(env);
      this.services = { ...this.services, [env]: { environment: env, services, problem: null } };
    } catch (e) {
      const old = this.services[env];
      this.services = { ...this.services, [env]: { environment: env, services: old?.services ?? [], problem: e as Problem } };
    }
  }

  apply(update: LiveUpdate): void {
    if (update.kind === "added") {
      this.views = { ...this.views, [update.view.spec.name]: update.view };
      return;
    }
    if (update.kind === "removed") {
      const { [update.environment]: _gone, ...rest } = this.views;
      this.views = rest;
      if (this.selected === update.environment) this.selected = this.ordered[0]?.spec.name ?? null;
      return;
    }
    const view = this.views[update.environment];
    if (!view) return;
    let next: EnvironmentView;
    switch (update.kind) {
      case "state":
        next = { ...view, state: update.state };
        break;
      case "snapshot":
        next = { ...view, inventory: update.inventory };
        break;
      case "changes":
        next = { ...view, inventory: applyChanges(view.inventory, update.changes) };
        break;
    }
    this.views = { ...this.views, [update.environment]: next };
  }
}

export function applyChanges(inventory: Inventory | null, changes: InventoryChange[]): Inventory {
  const inv: Inventory = inventory
    ? { ...inventory }
    : { containers: [], images: [], volumes: [], networks: [] };
  let containers: Container[] | null = null;
  for (const change of changes) {
    switch (change.kind) {
      case "containerUpserted": {
        containers ??= [...inv.containers];
        const i = containers.findIndex((c) => c.id === change.container.id);
        if (i >= 0) containers[i] = change.container;
        else containers.push(change.container);
        break;
      }
      case "containerRemoved":
        containers = (containers ?? inv.containers).filter((c) => c.id !== change.id);
        break;
      case "images":
        inv.images = change.images;
        break;
      case "volumes":
        inv.volumes = change.volumes;
        break;
      case "networks":
        inv.networks = change.networks;
        break;
    }
  }
  if (containers) inv.containers = containers;
  return inv;
}

export const store = new Store();
